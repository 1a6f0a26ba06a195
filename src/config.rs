//! The configuration file and its environment overlay.
//!
//! `seatwarden.toml` is read with the `config` crate (TOML only); every key but
//! the `[[policy.mapping]]` tables can be overridden with `SEATWARDEN__SECTION__KEY`
//! environment variables (`__` separates
//! the levels, e.g. `SEATWARDEN__WORKSPACE__PAGE_SIZE=50`; lists take commas, e.g.
//! `SEATWARDEN__POLICY__SCOPE_GROUPS="Taskade Users,Contractors"`). Any other
//! variable starting with `SEATWARDEN_` but the binary's own ([`OWN_VARIABLES`])
//! and its shipped scripts' ([`TOOL_VARIABLES`]) is not read and is warned about
//! (`SEATWARDEN_STATE_PATH`, one `_` for `__`); one `_` for `__` further on
//! (`SEATWARDEN__WORKSPACE_URL`) sets an unknown key, and that error names the
//! variable meant when one is: a spelling the configuration takes.
//!
//! Unknown keys and wrong types are errors naming the key and the file, an
//! unknown or missing key with the keys or values accepted there (a missing
//! required key with what it holds and an example): a number
//! or boolean written in quotes too, which the `config` crate would convert; a
//! variable's text is read strictly as the key's type (`true`/`false`). A
//! table headed with the wrong brackets (`[policy.mapping]`, `[[workspace]]`) is
//! told which it needs. Relative
//! paths are relative to the directory holding the configuration file, so a unit
//! file can point at `/etc/seatwarden/seatwarden.toml` from anywhere; a file that
//! cannot be read says what to do ([`Config::unreadable_file_hint`]), and where a
//! relative path was taken from. Secrets (the
//! workspace `token`, the SMTP `password`) can be given inline or as `token_file` /
//! `password_file` (systemd credentials, container secrets); they are held as
//! `SecretString` and print as `[redacted]`. A secret file (every `*_file` key
//! but certificates and CAs) is taken as it is but for the line break(s) at its
//! end (LF or CRLF) and a byte order mark at its start: a password that begins or ends with a space keeps it, as it
//! does inline ([`crate::directory::secret_in_file`]); tokens, client secrets and
//! keys lose surrounding whitespace, which none has
//! ([`crate::directory::token_in_file`]); inline secrets are read alike, as a
//! variable keeps its file's line break ([`Config::trim_inline_secrets`]); the workspace token must then be one
//! word, not `Bearer …` nor two lines, and an Entra client secret has no space
//! inside ([`client_secret_mistake`]). An empty or blank inline secret is
//! refused at load, as an empty or blank secret file is at use, and so is one
//! written in the file as a bare number or boolean, which the `config` crate would
//! turn into other text ([`Config::check_value_types`]). A secret file that
//! other users can read, or others than its owner change, is allowed (containers
//! mount secrets 0444) but warned about ([`Config::warnings`]); group read is not,
//! as systemd's credentials show as 0440. A syntax error quotes the file's line
//! it is on, but not the value of a secret key there ([`without_secret_lines`]);
//! an error about a URL key quotes it without a login or a query
//! ([`without_url_credentials`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

use crate::directory::{
    Directory, EntraAuth, EntraSettings, EntraSource, EntraUserName, FileSource, LdapFlavor,
    LdapSettings, LdapSource, MissingActive, OktaAuth, OktaSettings, OktaSource, OktaUserName,
    RequiredGroup, ScimDirectorySettings, ScimDirectorySource, Secret, secret_in_file,
    token_in_file,
};
use crate::guard::GuardSettings;
use crate::model::Role;
use crate::plan::{DeprovisionAction, PlanSettings};
use crate::policy::{Exception, Mapping, PolicySettings, Protected, UnmatchedAccounts};
use crate::retry::RetryPolicy;
use crate::schedule::Schedule;
use crate::workspace::{GroupMembers, Pagination, RoleAttribute, ScimSettings};

pub const ENV_PREFIX: &str = "SEATWARDEN";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path} not found (set --config or SEATWARDEN_CONFIG)")]
    NotFound { path: PathBuf },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: key `{key}`: {message}")]
    Key {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: key `{key}`: cannot read secret file {file}: {source}{hint}")]
    SecretFile {
        path: PathBuf,
        key: String,
        file: PathBuf,
        source: std::io::Error,
        /// What to do about it ([`Config::unreadable_file_hint`]), or empty.
        hint: String,
    },
}

impl crate::retry::Transient for ConfigError {
    fn is_transient(&self) -> bool {
        false
    }
}

/// The whole file. Section and key names are part of the interface: tooling and
/// docs depend on them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub directory: DirectoryConfig,
    pub workspace: WorkspaceConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub deprovision: DeprovisionConfig,
    #[serde(default)]
    pub safety: SafetyConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub report: ReportConfig,
    /// Where the file was read from; not a key.
    #[serde(skip)]
    pub source: PathBuf,
    /// Keys (`workspace.page_size`) set by `SEATWARDEN__…` variables: an error
    /// about one names the variable, not the file.
    #[serde(skip)]
    pub from_env: std::collections::BTreeSet<String>,
    /// Keys (`safety.max_deprovisions`) the file writes, tables included: a
    /// value it writes is the file's, even one equal to the default.
    #[serde(skip)]
    pub from_file: std::collections::BTreeSet<String>,
    /// Variables that start like an override but are none (`SEATWARDEN_STATE_PATH`,
    /// one `_` for `__`), nor one of [`OWN_VARIABLES`]: not read, and warned about.
    #[serde(skip)]
    pub unread_variables: Vec<String>,
    /// The keys whose path was relative as written (in the file or a variable),
    /// with that text: they are taken from the configuration file's folder, which
    /// a file not found there must say, as people expect the working directory.
    #[serde(skip)]
    pub relative_paths: std::collections::BTreeMap<&'static str, PathBuf>,
}

/// Variables the tools shipped beside the binary read or set: those documented for
/// operators (`systemd/seatwarden-admin`'s `SEATWARDEN_BIN`, `scripts/check-systemd.sh`'s
/// `SEATWARDEN_MAX_EXPOSURE`, named in `systemd/README.md`) and the interop and
/// bench scripts' (`scripts/interop.sh` exports its servers' addresses to the tests
/// it runs, which run the binary). Set in a shell for them, they are no misspelt
/// override, so not warned about either; none starts with a configuration
/// section's name, so none hides one. A unit test keeps this list in step with the
/// names `scripts/`, `systemd/` and `.ci/` use.
pub const TOOL_VARIABLES: [&str; 17] = [
    "SEATWARDEN_BENCH_SCIM2_PORT",
    "SEATWARDEN_BIN",
    "SEATWARDEN_INTEROP_DIR",
    "SEATWARDEN_INTEROP_PORT",
    "SEATWARDEN_INTEROP_PYTHON",
    "SEATWARDEN_LDAPS_URL",
    "SEATWARDEN_LDAP_BENCH_PORT",
    "SEATWARDEN_LDAP_CA",
    "SEATWARDEN_LDAP_PORT",
    "SEATWARDEN_LDAP_URL",
    "SEATWARDEN_MAX_EXPOSURE",
    "SEATWARDEN_PROMETHEUS_BIN",
    "SEATWARDEN_SCIM2_CURSOR_SERVER_URL",
    "SEATWARDEN_SCIM2_SERVER_TOKEN",
    "SEATWARDEN_SCIM2_SERVER_URL",
    "SEATWARDEN_SMTP_DIR",
    "SEATWARDEN_SMTP_PORT",
];

/// The variables the binary reads itself (`--config`, `--lock-timeout`, the
/// operator named in the audit trail, the sandbox's token): all others that start with `SEATWARDEN_`
/// and are not `SEATWARDEN__…` overrides are misspelt ones. A unit test keeps this
/// list in step with the names the sources read.
pub const OWN_VARIABLES: [&str; 4] = [
    "SEATWARDEN_CONFIG",
    "SEATWARDEN_LOCK_TIMEOUT",
    "SEATWARDEN_OPERATOR",
    "SEATWARDEN_SANDBOX_TOKEN",
];

/// `[directory]` is a tagged table: serde buffers it before the `config` crate can
/// read an environment variable's text as the number or boolean a key wants (as it
/// does everywhere else), so its numbers and booleans also accept that text. Text
/// in the file is refused afterwards, as for every key
/// ([`Config::check_value_types`]).
mod lenient {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::Deserializer;
    use serde::de::{Error, Unexpected, Visitor};

    pub trait FromText: Sized {
        const EXPECTING: &'static str;
        const IS_NUMBER: bool;
        fn from_text(text: &str) -> Option<Self>;
        fn from_bool(_: bool) -> Option<Self> {
            None
        }
        fn from_i64(_: i64) -> Option<Self> {
            None
        }
        fn from_u64(_: u64) -> Option<Self> {
            None
        }
    }

    impl FromText for bool {
        const EXPECTING: &'static str = "a boolean";
        const IS_NUMBER: bool = false;
        fn from_text(text: &str) -> Option<Self> {
            match text.trim().to_ascii_lowercase().as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            }
        }
        fn from_bool(value: bool) -> Option<Self> {
            Some(value)
        }
    }

    macro_rules! number_from_text {
        ($($t:ty),*) => {$(
            impl FromText for $t {
                const EXPECTING: &'static str = "a whole number";
                const IS_NUMBER: bool = true;
                fn from_text(text: &str) -> Option<Self> {
                    text.trim().parse().ok()
                }
                fn from_i64(value: i64) -> Option<Self> {
                    Self::try_from(value).ok()
                }
                fn from_u64(value: u64) -> Option<Self> {
                    Self::try_from(value).ok()
                }
            }
        )*};
    }
    number_from_text!(u32, usize);

    struct ValueOrText<T>(PhantomData<T>);

    impl<T: FromText> Visitor<'_> for ValueOrText<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(T::EXPECTING)
        }

        fn visit_bool<E: Error>(self, value: bool) -> Result<T, E> {
            T::from_bool(value).ok_or_else(|| E::invalid_type(Unexpected::Bool(value), &self))
        }

        fn visit_i64<E: Error>(self, value: i64) -> Result<T, E> {
            T::from_i64(value).ok_or_else(|| match T::IS_NUMBER {
                true => E::invalid_value(Unexpected::Signed(value), &self),
                false => E::invalid_type(Unexpected::Signed(value), &self),
            })
        }

        fn visit_u64<E: Error>(self, value: u64) -> Result<T, E> {
            T::from_u64(value).ok_or_else(|| match T::IS_NUMBER {
                true => E::invalid_value(Unexpected::Unsigned(value), &self),
                false => E::invalid_type(Unexpected::Unsigned(value), &self),
            })
        }

        fn visit_str<E: Error>(self, value: &str) -> Result<T, E> {
            T::from_text(value).ok_or_else(|| E::invalid_value(Unexpected::Str(value), &self))
        }
    }

    /// The value as typed, or its text as an environment variable gives it.
    pub fn parse<'de, D, T>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: FromText,
    {
        deserializer.deserialize_any(ValueOrText(PhantomData))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DirectoryConfig {
    /// A JSON or CSV export (chosen by extension).
    File { path: PathBuf },
    /// Okta's Management API: an API token (`token`/`token_file`), or an OAuth
    /// service app (`client_id` + `private_key_file`, optional `key_id`).
    Okta {
        /// The org URL, e.g. `https://acme.okta.com`.
        url: url::Url,
        #[serde(default, serialize_with = "redacted")]
        token: Option<SecretString>,
        #[serde(default)]
        token_file: Option<PathBuf>,
        #[serde(default)]
        client_id: Option<String>,
        #[serde(default)]
        private_key_file: Option<PathBuf>,
        #[serde(default)]
        key_id: Option<String>,
        /// Scope = the users and groups assigned to this app.
        #[serde(default)]
        app_id: Option<String>,
        /// `login` (default) or `email`: the profile attribute that becomes the
        /// workspace userName.
        #[serde(default)]
        user_name_attribute: OktaUserName,
        #[serde(
            default = "defaults::okta_max_concurrency",
            deserialize_with = "lenient::parse"
        )]
        max_concurrency: usize,
        #[serde(default = "defaults::timeout")]
        timeout: String,
        /// Lets a plain `http://` URL to a host that is not loopback through (the
        /// credential then crosses the network unencrypted): only for a network
        /// that is itself trusted, e.g. a sidecar that adds TLS.
        #[serde(default, deserialize_with = "lenient::parse")]
        allow_cleartext: bool,
        /// PEM: the only CAs trusted for the provider's certificates (instead of the
        /// system's roots), e.g. the CA of a proxy that inspects TLS.
        #[serde(default)]
        ca_file: Option<PathBuf>,
    },
    /// Microsoft Entra ID through Microsoft Graph: client credentials with a secret
    /// (`client_secret`/`client_secret_file`) or a certificate (`certificate_file` +
    /// `private_key_file`).
    Entra {
        tenant_id: String,
        client_id: String,
        #[serde(default, serialize_with = "redacted")]
        client_secret: Option<SecretString>,
        #[serde(default)]
        client_secret_file: Option<PathBuf>,
        #[serde(default)]
        certificate_file: Option<PathBuf>,
        #[serde(default)]
        private_key_file: Option<PathBuf>,
        /// Scope = the assignments of this application's service principal.
        #[serde(default)]
        app_id: Option<String>,
        /// Default `https://graph.microsoft.com`.
        #[serde(default)]
        graph_url: Option<url::Url>,
        /// Default `https://login.microsoftonline.com`.
        #[serde(default)]
        login_url: Option<url::Url>,
        #[serde(
            default = "defaults::entra_max_concurrency",
            deserialize_with = "lenient::parse"
        )]
        max_concurrency: usize,
        /// Keeps a snapshot inside Graph's directory read budget; 0 disables.
        #[serde(
            default = "defaults::entra_requests_per_second",
            deserialize_with = "lenient::parse"
        )]
        requests_per_second: u32,
        #[serde(default = "defaults::timeout")]
        timeout: String,
        /// B2B guests (`userType` Guest) are people of the directory like members;
        /// `false` leaves them out, so their workspace accounts count as nobody's.
        #[serde(
            default = "defaults::include_guests",
            deserialize_with = "lenient::parse"
        )]
        include_guests: bool,
        /// `userPrincipalName` (default) or `mail`: the user property that becomes
        /// the workspace userName.
        #[serde(default)]
        user_name_attribute: EntraUserName,
        /// Lets a plain `http://` URL to a host that is not loopback through (the
        /// credential then crosses the network unencrypted): only for a network
        /// that is itself trusted, e.g. a sidecar that adds TLS.
        #[serde(default, deserialize_with = "lenient::parse")]
        allow_cleartext: bool,
        /// PEM: the only CAs trusted for the provider's certificates (instead of the
        /// system's roots), e.g. the CA of a proxy that inspects TLS.
        #[serde(default)]
        ca_file: Option<PathBuf>,
    },
    /// Active Directory or OpenLDAP: a simple bind (`bind_dn` +
    /// `bind_password_file`), paged searches for users and groups.
    Ldap {
        /// `ldaps://host[:port]`, or `ldap://host[:port]` (with `start_tls`).
        url: String,
        #[serde(default, deserialize_with = "lenient::parse")]
        start_tls: bool,
        /// PEM: the only CA trusted for the server (instead of the system's roots).
        #[serde(default)]
        ca_file: Option<PathBuf>,
        bind_dn: String,
        #[serde(default, serialize_with = "redacted")]
        bind_password: Option<SecretString>,
        #[serde(default)]
        bind_password_file: Option<PathBuf>,
        /// Where users are searched (subtree).
        base_dn: String,
        /// Where groups are searched; default `base_dn`.
        #[serde(default)]
        group_base_dn: Option<String>,
        /// `active_directory` (default) or `openldap`: the defaults below.
        #[serde(default)]
        flavor: LdapFlavor,
        #[serde(default)]
        user_filter: Option<String>,
        #[serde(default)]
        group_filter: Option<String>,
        /// Users matching it are suspended, besides the flavor's own rule, e.g.
        /// `(nsAccountLock=TRUE)` on 389 Directory Server and FreeIPA.
        #[serde(default)]
        disabled_filter: Option<String>,
        #[serde(default)]
        id_attribute: Option<String>,
        #[serde(default)]
        user_name_attribute: Option<String>,
        #[serde(
            default = "defaults::ldap_page_size",
            deserialize_with = "lenient::parse"
        )]
        page_size: u32,
        #[serde(default = "defaults::timeout")]
        timeout: String,
        /// Lets `ldap://` without `start_tls` to a host that is not loopback through
        /// (the bind password then crosses the network unencrypted): only for a
        /// network that is itself trusted.
        #[serde(default, deserialize_with = "lenient::parse")]
        allow_cleartext: bool,
    },
    /// A SCIM 2.0 service provider that serves the people (an identity provider or
    /// HR system): a bearer token (`token`/`token_file`), Users and Groups listed.
    Scim {
        /// Up to and including the version, e.g. `https://idp.example.com/scim/v2`.
        url: url::Url,
        #[serde(default, serialize_with = "redacted")]
        token: Option<SecretString>,
        #[serde(default)]
        token_file: Option<PathBuf>,
        #[serde(default = "defaults::page_size", deserialize_with = "lenient::parse")]
        page_size: u32,
        /// `auto` | `index` | `cursor` (RFC 9865), as for the workspace.
        #[serde(default)]
        pagination: Pagination,
        #[serde(
            default = "defaults::max_concurrency",
            deserialize_with = "lenient::parse"
        )]
        max_concurrency: usize,
        /// 0 disables the rate limit.
        #[serde(
            default = "defaults::requests_per_second",
            deserialize_with = "lenient::parse"
        )]
        requests_per_second: u32,
        #[serde(default = "defaults::timeout")]
        timeout: String,
        /// Lets a plain `http://` URL to a host that is not loopback through (the
        /// credential then crosses the network unencrypted): only for a network
        /// that is itself trusted, e.g. a sidecar that adds TLS.
        #[serde(default, deserialize_with = "lenient::parse")]
        allow_cleartext: bool,
        /// PEM: the only CAs trusted for the provider's certificates (instead of the
        /// system's roots), e.g. the CA of a proxy that inspects TLS.
        #[serde(default)]
        ca_file: Option<PathBuf>,
        /// `refuse` | `active` | `inactive`: how a User without `active` is read.
        #[serde(default)]
        missing_active: MissingActive,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceConfig {
    /// SCIM base URL, e.g. `https://www.taskade.com/scim/v2`.
    pub url: String,
    #[serde(default, serialize_with = "redacted")]
    pub token: Option<SecretString>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `roles` | `none` | `groups` | a full extension attribute path.
    #[serde(default = "defaults::role_attribute")]
    pub role_attribute: String,
    /// With `role_attribute = "groups"`: role name → the workspace group whose
    /// members hold that role (`Owner = "Taskade Owners"`). Role names are read
    /// without regard to case: the file's keys keep the case they are written
    /// in, but an environment variable's come lower-cased
    /// (`SEATWARDEN__WORKSPACE__ROLE_GROUPS__OWNER` sets `owner`), and that one
    /// overrides the file's `Owner`.
    #[serde(default)]
    pub role_groups: std::collections::BTreeMap<String, String>,
    #[serde(default = "defaults::page_size")]
    pub page_size: u32,
    /// `auto` (index paging unless the provider pages by cursor only) | `index` |
    /// `cursor` (RFC 9865).
    #[serde(default)]
    pub pagination: Pagination,
    /// Where managed groups' members are read from: `listed` (the groups'
    /// `members`) | `by_member_filter` (one `members.value eq` filter per
    /// account, for providers that never show members: AWS IAM Identity Center).
    #[serde(default)]
    pub group_members: GroupMembers,
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: usize,
    #[serde(default = "defaults::requests_per_second")]
    pub requests_per_second: u32,
    #[serde(default = "defaults::timeout")]
    pub timeout: String,
    /// Retries of a request that failed for a transient reason (no answer, a 5xx
    /// but 501, 408, 429), after the first attempt; 0 sends each request once.
    #[serde(default = "defaults::retries")]
    pub retries: usize,
    /// The wait before the first retry, doubled at each next (with jitter, at
    /// most 30 s).
    #[serde(default = "defaults::retry_delay")]
    pub retry_delay: String,
    /// Lets a plain `http://` URL to a host that is not loopback through (the token
    /// then crosses the network unencrypted): only for a network that is itself
    /// trusted, e.g. a sidecar that adds TLS.
    #[serde(default)]
    pub allow_cleartext: bool,
    /// PEM: the only CAs trusted for the workspace's certificate (instead of the
    /// system's roots), e.g. a self-hosted app's private CA or the CA of a proxy
    /// that inspects TLS.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Empty: every active identity is in scope.
    #[serde(default)]
    pub scope_groups: Vec<String>,
    #[serde(default = "defaults::default_role")]
    pub default_role: Role,
    #[serde(default = "defaults::unmatched_accounts")]
    pub unmatched_accounts: UnmatchedAccounts,
    #[serde(default)]
    pub mapping: Vec<MappingConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            scope_groups: Vec::new(),
            default_role: defaults::default_role(),
            unmatched_accounts: defaults::unmatched_accounts(),
            mapping: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    pub group: String,
    pub workspace_group: String,
    pub role: Role,
}

/// `[[safety.exceptions]]`: one account kept as it is until a time, with the
/// reason (see [`crate::policy::Exception`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionConfig {
    /// The account's (or the person's directory) userName, exactly: no pattern.
    pub user_name: String,
    /// `2026-12-15` (through that day), `2026-12-15T17:00:00` (on the clock of
    /// `report.timezone`) or with an offset (`2026-12-15T17:00:00+01:00`).
    pub until: String,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeprovisionConfig {
    #[serde(default = "defaults::deprovision_action")]
    pub action: DeprovisionAction,
    /// With `action = "delete"` (and required by it): how long an account stays
    /// deactivated before it is deleted, e.g. `30d`; `0s` deletes at once.
    #[serde(default)]
    pub delete_after: Option<String>,
    /// From detection to verified deactivation, e.g. `1h`.
    #[serde(default = "defaults::sla")]
    pub sla: String,
}

impl Default for DeprovisionConfig {
    fn default() -> Self {
        DeprovisionConfig {
            action: defaults::deprovision_action(),
            delete_after: None,
            sla: defaults::sla(),
        }
    }
}

/// When the daemon's jobs run: cron expressions on the wall clock of `timezone`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// IANA zone name, e.g. `Europe/Berlin`.
    #[serde(default = "defaults::timezone")]
    pub timezone: String,
    #[serde(default = "defaults::reconcile_cron")]
    pub reconcile: String,
    #[serde(default = "defaults::sweep_cron")]
    pub sweep: String,
    /// Drift report email; empty: no digest.
    #[serde(default = "defaults::digest_cron")]
    pub digest: String,
    /// Runs, reports and closed ledger entries older than this are pruned.
    #[serde(default = "defaults::retention")]
    pub retention: String,
    /// How long the daemon's reconcile may run before it is stopped as SIGTERM
    /// stops it, so that the sweeps waiting behind its lock run; empty: no limit.
    #[serde(default)]
    pub reconcile_max_duration: String,
    /// Observe only: each reconcile the daemon runs is a dry run (`reconcile
    /// --dry-run`), and the jobs that write (the sweep, the retry pass) are not
    /// scheduled.
    #[serde(default)]
    pub dry_run: bool,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            timezone: defaults::timezone(),
            reconcile: defaults::reconcile_cron(),
            sweep: defaults::sweep_cron(),
            digest: defaults::digest_cron(),
            retention: defaults::retention(),
            reconcile_max_duration: String::new(),
            dry_run: false,
        }
    }
}

/// The daemon's HTTP listener: health, readiness, metrics, status.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "defaults::listen")]
    pub listen: String,
    /// Enables `POST /reconcile` for callers sending this bearer token.
    #[serde(default)]
    pub trigger_token_file: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: defaults::listen(),
            trigger_token_file: None,
        }
    }
}

/// The `[schedule]`, `[deprovision] sla` and `[http]` settings, parsed.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    pub timezone: chrono_tz::Tz,
    pub reconcile: Schedule,
    pub sweep: Schedule,
    /// `schedule.digest`; `None` when empty or when there is no `[report.email]`.
    pub digest: Option<Schedule>,
    pub retention: Duration,
    /// `schedule.reconcile_max_duration`; `None` when empty (no limit).
    pub reconcile_max_duration: Option<Duration>,
    /// `schedule.dry_run`: the daemon plans and reports, and writes nothing to
    /// the workspace.
    pub dry_run: bool,
    pub sla: Duration,
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    #[serde(default = "defaults::max_deprovisions")]
    pub max_deprovisions: usize,
    #[serde(default = "defaults::max_deprovision_percent")]
    pub max_deprovision_percent: f64,
    #[serde(default = "defaults::min_population_for_percent")]
    pub min_population_for_percent: usize,
    #[serde(default)]
    pub protected: Vec<String>,
    // Issue 6: per-class and 24 h thresholds, source sanity, settle window,
    // protected directory groups, circuit breaker. Defaults in `guard::GuardSettings`.
    #[serde(default = "defaults::max_deprovisions_per_day")]
    pub max_deprovisions_per_day: usize,
    /// Of the managed accounts per rolling 24 h (from `min_population_for_percent`
    /// on), as the count is per run: several small runs add up. So for each class.
    #[serde(default = "defaults::max_deprovision_percent_per_day")]
    pub max_deprovision_percent_per_day: f64,
    #[serde(default = "defaults::max_membership_removals")]
    pub max_membership_removals: usize,
    #[serde(default = "defaults::max_membership_removal_percent")]
    pub max_membership_removal_percent: f64,
    #[serde(default = "defaults::max_membership_removals_per_day")]
    pub max_membership_removals_per_day: usize,
    #[serde(default = "defaults::max_membership_removal_percent_per_day")]
    pub max_membership_removal_percent_per_day: f64,
    #[serde(default = "defaults::max_role_downgrades")]
    pub max_role_downgrades: usize,
    #[serde(default = "defaults::max_role_downgrade_percent")]
    pub max_role_downgrade_percent: f64,
    #[serde(default = "defaults::max_role_downgrades_per_day")]
    pub max_role_downgrades_per_day: usize,
    #[serde(default = "defaults::max_role_downgrade_percent_per_day")]
    pub max_role_downgrade_percent_per_day: f64,
    /// Deletions after `deprovision.delete_after`: their own class.
    #[serde(default = "defaults::max_deletions")]
    pub max_deletions: usize,
    #[serde(default = "defaults::max_deletion_percent")]
    pub max_deletion_percent: f64,
    #[serde(default = "defaults::max_deletions_per_day")]
    pub max_deletions_per_day: usize,
    #[serde(default = "defaults::max_deletion_percent_per_day")]
    pub max_deletion_percent_per_day: f64,
    /// userName changes: their own class, held whole over a limit like the others.
    #[serde(default = "defaults::max_renames")]
    pub max_renames: usize,
    #[serde(default = "defaults::max_rename_percent")]
    pub max_rename_percent: f64,
    #[serde(default = "defaults::max_renames_per_day")]
    pub max_renames_per_day: usize,
    #[serde(default = "defaults::max_rename_percent_per_day")]
    pub max_rename_percent_per_day: f64,
    /// A directory snapshot that shrank more than this share (percent) against the
    /// largest one accepted in the 24 h before (else the last accepted) is
    /// rejected as a source fault.
    #[serde(default = "defaults::max_directory_shrink_percent")]
    pub max_directory_shrink_percent: f64,
    /// Creates and updates wait until their drift was seen this long ago.
    #[serde(default = "defaults::settle")]
    pub settle: String,
    /// Directory groups whose members are protected like `protected` names.
    #[serde(default)]
    pub protected_groups: Vec<String>,
    /// Directory groups whose names differ from a configured group's only in
    /// spaces, quotes or characters that do not show, but which are other
    /// groups ("Founder's Club" beside "Founders Club"): no look-alikes, so
    /// nothing of their members is held for them ([`crate::names`]). Written as
    /// the directory spells them; compared case aside, not trimmed.
    #[serde(default)]
    pub distinct_groups: Vec<String>,
    /// Accounts left alone until a time, each with its reason.
    #[serde(default)]
    pub exceptions: Vec<ExceptionConfig>,
    #[serde(default)]
    pub circuit: CircuitConfig,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        SafetyConfig {
            max_deprovisions: defaults::max_deprovisions(),
            max_deprovision_percent: defaults::max_deprovision_percent(),
            min_population_for_percent: defaults::min_population_for_percent(),
            protected: Vec::new(),
            max_deprovisions_per_day: defaults::max_deprovisions_per_day(),
            max_deprovision_percent_per_day: defaults::max_deprovision_percent_per_day(),
            max_membership_removals: defaults::max_membership_removals(),
            max_membership_removal_percent: defaults::max_membership_removal_percent(),
            max_membership_removals_per_day: defaults::max_membership_removals_per_day(),
            max_membership_removal_percent_per_day:
                defaults::max_membership_removal_percent_per_day(),
            max_role_downgrades: defaults::max_role_downgrades(),
            max_role_downgrade_percent: defaults::max_role_downgrade_percent(),
            max_role_downgrades_per_day: defaults::max_role_downgrades_per_day(),
            max_role_downgrade_percent_per_day: defaults::max_role_downgrade_percent_per_day(),
            max_deletions: defaults::max_deletions(),
            max_deletion_percent: defaults::max_deletion_percent(),
            max_deletions_per_day: defaults::max_deletions_per_day(),
            max_deletion_percent_per_day: defaults::max_deletion_percent_per_day(),
            max_renames: defaults::max_renames(),
            max_rename_percent: defaults::max_rename_percent(),
            max_renames_per_day: defaults::max_renames_per_day(),
            max_rename_percent_per_day: defaults::max_rename_percent_per_day(),
            max_directory_shrink_percent: defaults::max_directory_shrink_percent(),
            settle: defaults::settle(),
            protected_groups: Vec::new(),
            distinct_groups: Vec::new(),
            exceptions: Vec::new(),
            circuit: CircuitConfig::default(),
        }
    }
}

/// `[safety.circuit]`: the apply-time circuit breaker.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitConfig {
    /// Opens when more than this share of the last `window` writes failed.
    #[serde(default = "defaults::failure_ratio")]
    pub failure_ratio: f64,
    #[serde(default = "defaults::circuit_window")]
    pub window: usize,
    /// How long an open circuit stays open before writes are tried again.
    #[serde(default = "defaults::cool_down")]
    pub cool_down: String,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            failure_ratio: defaults::failure_ratio(),
            window: defaults::circuit_window(),
            cool_down: defaults::cool_down(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default = "defaults::state_path")]
    pub path: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            path: defaults::state_path(),
        }
    }
}

/// `[report]`: how reports and emails name the organisation and show times, and
/// `[report.email]`: where digests and alerts go.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[derive(Default)]
pub struct ReportConfig {
    /// The name in subjects and titles; default: the workspace URL's host.
    #[serde(default)]
    pub name: Option<String>,
    /// IANA time zone for times people read (due times, periods), e.g.
    /// `Europe/Berlin`; default: `schedule.timezone`, so one key usually does.
    #[serde(default)]
    pub timezone: Option<String>,
    /// How people reach seatwarden's commands where this runs, for every command
    /// seatwarden tells them to run (`{admin_command} approve 42`) in alerts,
    /// digests, reports, holds, `status`, `explain`, `approve`/`reject`/`link` and
    /// the export; default `seatwarden`. Under systemd: `sudo seatwarden-admin`.
    #[serde(default)]
    pub admin_command: Option<String>,
    #[serde(default)]
    pub email: Option<EmailConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// `smtp://host:25` (plain, local relay), `smtp://host:587?tls=starttls`, `smtps://host:465`.
    pub smtp_url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default, serialize_with = "redacted")]
    pub password: Option<SecretString>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    pub from: String,
    pub to: Vec<String>,
    /// The same alert is not re-sent within this period.
    #[serde(default = "defaults::quiet_period")]
    pub quiet_period: String,
    /// An alert's condition must stay clear this long before its resolution is
    /// sent (`0s`: at once); coming back meanwhile continues the same alert.
    #[serde(default = "defaults::resolve_after")]
    pub resolve_after: String,
    /// A PEM CA certificate to trust for this server instead of the system roots
    /// (a relay with a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "defaults::timeout")]
    pub timeout: String,
    /// Lets a login (`username` + password) over a connection without TLS to a
    /// relay that is not loopback through: only for a network that is itself trusted.
    /// Also silences the warning that plain `smtp://` to such a relay carries the
    /// messages themselves unencrypted ([`Config::warnings`]).
    #[serde(default)]
    pub allow_cleartext: bool,
}

mod defaults {
    use super::*;
    pub fn timezone() -> String {
        "UTC".into()
    }
    pub fn quiet_period() -> String {
        "6h".into()
    }
    pub fn resolve_after() -> String {
        "1h".into()
    }
    pub fn role_attribute() -> String {
        "roles".into()
    }
    pub fn page_size() -> u32 {
        100
    }
    pub fn max_concurrency() -> usize {
        4
    }
    pub fn requests_per_second() -> u32 {
        10
    }
    pub fn timeout() -> String {
        "30s".into()
    }
    pub fn retries() -> usize {
        crate::retry::RetryPolicy::default().max_retries
    }
    pub fn retry_delay() -> String {
        format!(
            "{}ms",
            crate::retry::RetryPolicy::default().min_delay.as_millis()
        )
    }
    pub fn default_role() -> Role {
        Role::Viewer
    }
    pub fn unmatched_accounts() -> UnmatchedAccounts {
        UnmatchedAccounts::Report
    }
    pub fn deprovision_action() -> DeprovisionAction {
        DeprovisionAction::Deactivate
    }
    pub fn max_deprovisions() -> usize {
        25
    }
    pub fn max_deprovision_percent() -> f64 {
        5.0
    }
    pub fn min_population_for_percent() -> usize {
        100
    }
    pub fn max_deprovisions_per_day() -> usize {
        GuardSettings::default().max_deprovisions_per_day
    }
    pub fn max_deprovision_percent_per_day() -> f64 {
        GuardSettings::default().max_deprovision_percent_per_day
    }
    pub fn max_membership_removals() -> usize {
        GuardSettings::default().max_membership_removals
    }
    pub fn max_membership_removal_percent() -> f64 {
        GuardSettings::default().max_membership_removal_percent
    }
    pub fn max_membership_removals_per_day() -> usize {
        GuardSettings::default().max_membership_removals_per_day
    }
    pub fn max_membership_removal_percent_per_day() -> f64 {
        GuardSettings::default().max_membership_removal_percent_per_day
    }
    pub fn max_role_downgrades() -> usize {
        GuardSettings::default().max_role_downgrades
    }
    pub fn max_role_downgrade_percent() -> f64 {
        GuardSettings::default().max_role_downgrade_percent
    }
    pub fn max_role_downgrades_per_day() -> usize {
        GuardSettings::default().max_role_downgrades_per_day
    }
    pub fn max_role_downgrade_percent_per_day() -> f64 {
        GuardSettings::default().max_role_downgrade_percent_per_day
    }
    pub fn max_deletions() -> usize {
        GuardSettings::default().max_deletions
    }
    pub fn max_deletion_percent() -> f64 {
        GuardSettings::default().max_deletion_percent
    }
    pub fn max_deletions_per_day() -> usize {
        GuardSettings::default().max_deletions_per_day
    }
    pub fn max_deletion_percent_per_day() -> f64 {
        GuardSettings::default().max_deletion_percent_per_day
    }
    pub fn max_renames() -> usize {
        GuardSettings::default().max_renames
    }
    pub fn max_rename_percent() -> f64 {
        GuardSettings::default().max_rename_percent
    }
    pub fn max_renames_per_day() -> usize {
        GuardSettings::default().max_renames_per_day
    }
    pub fn max_rename_percent_per_day() -> f64 {
        GuardSettings::default().max_rename_percent_per_day
    }
    pub fn max_directory_shrink_percent() -> f64 {
        20.0
    }
    pub fn settle() -> String {
        "10m".into()
    }
    pub fn failure_ratio() -> f64 {
        0.5
    }
    pub fn circuit_window() -> usize {
        20
    }
    pub fn cool_down() -> String {
        "15m".into()
    }
    pub fn state_path() -> PathBuf {
        PathBuf::from("seatwarden.db")
    }
    pub fn sla() -> String {
        "1h".into()
    }
    pub fn reconcile_cron() -> String {
        "*/30 * * * *".into()
    }
    pub fn sweep_cron() -> String {
        "*/5 * * * *".into()
    }
    pub fn digest_cron() -> String {
        "0 8 * * 1-5".into()
    }
    pub fn retention() -> String {
        "30d".into()
    }
    pub fn listen() -> String {
        "127.0.0.1:9464".into()
    }
    /// Active Directory's default MaxPageSize is 1,000.
    pub fn ldap_page_size() -> u32 {
        500
    }
    /// Well below Okta's 75 concurrent requests per org, which other
    /// integrations share.
    pub fn okta_max_concurrency() -> usize {
        8
    }
    pub fn include_guests() -> bool {
        true
    }
    pub fn entra_max_concurrency() -> usize {
        4
    }
    /// 50 requests/s of at most 5 resource units each stays under the smallest
    /// tenants' 3,500 units per 10 s.
    pub fn entra_requests_per_second() -> u32 {
        50
    }
}

fn redacted<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_some("[redacted]"),
        None => s.serialize_none(),
    }
}

/// Lists that may be set from one environment variable, comma-separated.
const ENV_LIST_KEYS: [&str; 4] = [
    "policy.scope_groups",
    "safety.protected",
    "safety.protected_groups",
    "report.email.to",
];

impl Config {
    /// Reads `path`, overlays `SEATWARDEN__…` variables from the process
    /// environment, and validates the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, None)
    }

    /// Like [`Config::load`], but with the environment given explicitly (tests).
    pub fn load_with_env(
        path: &Path,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Config, ConfigError> {
        // `is_file` is false for a folder and for a file behind a folder the user
        // cannot enter: both exist, and "not found" would send them looking for it.
        match std::fs::metadata(path) {
            Ok(metadata) if metadata.is_dir() => {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    message: format!(
                        "is a folder; --config (or SEATWARDEN_CONFIG) names the file, such as {}",
                        path.join("seatwarden.toml").display()
                    ),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotFound {
                    path: path.to_owned(),
                });
            }
            Err(e) => {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    message: format!("cannot read it: {e}"),
                });
            }
        }
        // The `config` crate reads a file that is not UTF-8 lossily (a Latin-1
        // "ä" in a group name becomes U+FFFD) or, for UTF-16, fails with a TOML
        // error about the first line's redacted text: said here, where the byte is.
        if let Ok(bytes) = std::fs::read(path)
            && let Err(error) = std::str::from_utf8(&bytes)
        {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                message: config_not_utf8(&bytes, error),
            });
        }
        let prefix = format!("{ENV_PREFIX}__");
        let mut env: std::collections::HashMap<String, String> = match env {
            Some(env) => env,
            None => std::env::vars_os()
                .filter_map(|(name, value)| {
                    Some((name.into_string().ok()?, value.into_string().ok()?))
                })
                .collect(),
        };
        let mut unread_variables: Vec<String> = env
            .keys()
            .filter(|name| is_unread_variable(name))
            .cloned()
            .collect();
        unread_variables.sort();
        env.retain(|name, _| name.starts_with(&prefix));
        let variables: Vec<String> = env.keys().cloned().collect();
        let key_of = key_of_variable;
        // `SEATWARDEN__POLICY__MAPPING__0__ROLE` reaches the `config` crate as a
        // table where a list is, and its error, which names no origin, would
        // blame the file: the variable is named here, as for
        // `SEATWARDEN__POLICY__MAPPING` itself.
        // So for `[[safety.exceptions]]`, whose error ("expected a list, such as
        // ["a", "b"]") offered a form no exception has.
        let mut table_variables: Vec<(&String, &str)> = variables
            .iter()
            .filter_map(|name| {
                let key = key_of(name);
                TABLES_FROM_FILE_ONLY
                    .iter()
                    .find(|(table, _)| {
                        key == *table
                            || key
                                .strip_prefix(table)
                                .is_some_and(|rest| rest.starts_with('.'))
                    })
                    .map(|(_, message)| (name, *message))
            })
            .collect();
        table_variables.sort();
        if let Some((name, message)) = table_variables.first() {
            return Err(ConfigError::Key {
                path: PathBuf::from(format!("environment variable {name}")),
                key: key_of(name),
                message: (*message).to_owned(),
            });
        }
        let (raw, scalars) = layered(path, env.clone())?;
        let mut config: Config = raw.clone().try_deserialize().map_err(|e| {
            let error = locate_in_directory_table(&raw, path, describe_config_error(path, e));
            let kind_variable = variables
                .iter()
                .find(|name| key_of_variable(name) == "directory.kind");
            let error = name_what_is_accepted(
                error,
                raw.get_string("directory.kind").ok(),
                kind_variable.map(String::as_str),
            );
            let error = blame_the_table_maker(error, path, &variables);
            let ldap = raw
                .get_string("directory.kind")
                .ok()
                .map(|kind| kind == "ldap");
            let error = in_plain_words(
                blame_the_override(
                    blame_the_variable(error, path, &variables),
                    path,
                    &variables,
                ),
                ldap,
            );
            let error = one_table_headed_as_a_list(error, path);
            match suggest_the_spelling(error, path, &env) {
                ConfigError::Key { path, key, message } => ConfigError::Key {
                    path,
                    message: without_url_credentials(&key, &message),
                    key,
                },
                other => other,
            }
        })?;
        config.source = path.to_owned();
        config.from_env = variables.iter().map(|name| key_of(name)).collect();
        config.from_file = keys_written_in(path);
        config.unread_variables = unread_variables;
        config.check_value_types(&scalars)?;
        config.resolve_paths();
        config.trim_lists();
        config.trim_inline_secrets();
        config.compose_group_names();
        config.validate()?;
        Ok(config)
    }

    /// The `config` crate converts what it reads into the type a key wants: the
    /// text `"100"` becomes a number, `"yes"` and `1` become `true`, and a fraction
    /// for a whole number is rounded (`max_deprovisions = 2.5` would allow three).
    /// A value typed wrong in the file is a mistake, not a spelling, so every
    /// scalar in the file is compared with the type its key took in the loaded
    /// configuration and a mismatch is refused. A variable's value is always text:
    /// it is read as the key's type strictly (`true`/`false` for a boolean, in
    /// any case; digits for a whole number), not as the `config` crate would
    /// (`yes`, `on` and `1` for `true`, and `yes` for 1).
    fn check_value_types(&self, variables: &[(String, String)]) -> Result<(), ConfigError> {
        let Ok(toml::Value::Table(loaded)) = toml::Value::try_from(self) else {
            return Ok(());
        };
        let ldap = matches!(self.directory, DirectoryConfig::Ldap { .. });
        for (name, text) in variables {
            let key = key_of_variable(name);
            let Some(expected) = value_at(&loaded, &key) else {
                continue;
            };
            if let Some(message) = text_for_type(text, expected) {
                return Err(ConfigError::Key {
                    path: PathBuf::from(format!("environment variable {name}")),
                    message: with_allowed_range(&key, message, Some(ldap)),
                    key,
                });
            }
        }
        let text = std::fs::read_to_string(&self.source).map_err(|e| ConfigError::Invalid {
            path: self.source.clone(),
            message: format!("cannot read it again: {e}"),
        })?;
        // The `config` crate parsed it already: a file that does not parse here
        // is one that changed in between, and the next load will say so.
        let Ok(file) = toml::from_str::<toml::Table>(&text) else {
            return Ok(());
        };
        // A secret the `config` crate read from a bare number or boolean is its
        // text, not what was typed (`1.50` is "1.5", `0x1F` is "31"), and would
        // fail at the provider or, for a bind password, lock the account.
        for (key, _) in self.inline_secrets() {
            let what = match value_at(&file, key) {
                _ if self.from_env.contains(key) => continue,
                Some(toml::Value::String(_)) | None => continue,
                Some(toml::Value::Boolean(_)) => "a boolean",
                Some(toml::Value::Integer(_) | toml::Value::Float(_)) => "a number",
                Some(_) => "no text",
            };
            let name = key.rsplit('.').next().unwrap_or(key);
            return Err(self.key_error(
                key,
                format!(
                    "is written as {what}, not text, and would be sent as other text than \
                     typed (a number loses its leading and trailing zeros); quote it, as \
                     {name} = \"…\""
                ),
            ));
        }
        let mut mistyped = Vec::new();
        mistyped_values(&file, &loaded, "", &mut mistyped);
        match mistyped
            .into_iter()
            .find(|(key, _)| !self.from_env.contains(key))
        {
            Some((key, message)) => {
                let message = with_allowed_range(&key, message, Some(ldap));
                Err(self.key_error(&key, message))
            }
            None => Ok(()),
        }
    }

    /// The folder relative paths are taken from, in the file or a variable alike:
    /// the configuration file's, made absolute (from the working directory when
    /// `--config` is relative) so that `check-config` shows the paths in use.
    pub fn base_dir(&self) -> PathBuf {
        let file = std::path::absolute(&self.source).unwrap_or_else(|_| self.source.clone());
        file.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    /// Every file and folder the configuration names, each with its key, as it
    /// will be used (relative paths resolved): `check-config` lists them.
    pub fn files(&self) -> Vec<(&'static str, &Path)> {
        let mut files: Vec<(&'static str, &Path)> = vec![("state.path", &self.state.path)];
        match &self.directory {
            DirectoryConfig::File { path } => files.push(("directory.path", path)),
            DirectoryConfig::Entra {
                certificate_file,
                ca_file,
                ..
            } => {
                if let Some(file) = certificate_file {
                    files.push(("directory.certificate_file", file));
                }
                if let Some(file) = ca_file {
                    files.push(("directory.ca_file", file));
                }
            }
            DirectoryConfig::Ldap { ca_file, .. }
            | DirectoryConfig::Okta { ca_file, .. }
            | DirectoryConfig::Scim { ca_file, .. } => {
                if let Some(file) = ca_file {
                    files.push(("directory.ca_file", file));
                }
            }
        }
        if let Some(file) = &self.workspace.ca_file {
            files.push(("workspace.ca_file", file));
        }
        files.extend(self.secret_files());
        if let Some(file) = self
            .report
            .email
            .as_ref()
            .and_then(|e| e.ca_file.as_deref())
        {
            files.push(("report.email.ca_file", file));
        }
        files
    }

    /// Names and patterns are compared exactly: `"A, B"` split on the comma gives
    /// `" B"`, which no directory group is called, and a scope or protection that
    /// silently matches nobody is the worst kind of mistake here.
    fn trim_lists(&mut self) {
        let lists = [
            &mut self.policy.scope_groups,
            &mut self.safety.protected,
            &mut self.safety.protected_groups,
        ];
        for list in lists {
            for item in list.iter_mut() {
                *item = item.trim().to_owned();
            }
        }
        if let Some(email) = &mut self.report.email {
            for to in &mut email.to {
                *to = to.trim().to_owned();
            }
        }
    }

    /// Inline secrets as their files are read: tokens and client secrets without
    /// surrounding whitespace ([`token_in_file`]: none has any), passwords
    /// without the line break(s) at their end ([`secret_in_file`]: a space is
    /// kept). A variable set from a file keeps its line break (a Kubernetes
    /// secret made with `--from-file` and passed by `secretKeyRef`, a Docker
    /// `--env-file` saved with CRLF): sent with it, a token failed every request
    /// as "failed to parse header value", naming no key, and an LDAP bind
    /// password failed every bind, which locks the service account.
    fn trim_inline_secrets(&mut self) {
        use secrecy::ExposeSecret;
        let trim = |secret: &mut Option<SecretString>, password: bool| {
            if let Some(value) = secret.as_mut() {
                let text = value.expose_secret();
                let trimmed = match password {
                    true => text.trim_end_matches(['\r', '\n']),
                    false => text.trim(),
                };
                if trimmed.len() != text.len() {
                    *value = SecretString::from(trimmed.to_owned());
                }
            }
        };
        match &mut self.directory {
            DirectoryConfig::Okta { token, .. } | DirectoryConfig::Scim { token, .. } => {
                trim(token, false)
            }
            DirectoryConfig::Entra { client_secret, .. } => trim(client_secret, false),
            DirectoryConfig::Ldap { bind_password, .. } => trim(bind_password, true),
            DirectoryConfig::File { .. } => {}
        }
        trim(&mut self.workspace.token, false);
        if let Some(email) = &mut self.report.email {
            trim(&mut email.password, true);
        }
    }

    /// Directory group names composed ([`crate::model::compose_name`]: `e` + U+0301 is `é`), as every
    /// directory's are once read ([`crate::directory::Directory::snapshot`]): a
    /// configuration typed on macOS, or pasted from an export, spells accents
    /// decomposed, and compared exactly a mapping would give its role to no one.
    fn compose_group_names(&mut self) {
        let names = self
            .policy
            .scope_groups
            .iter_mut()
            .chain(self.policy.mapping.iter_mut().map(|m| &mut m.group))
            .chain(self.safety.protected_groups.iter_mut())
            .chain(self.safety.distinct_groups.iter_mut());
        for name in names {
            crate::model::compose_in_place(name);
        }
    }

    fn resolve_paths(&mut self) {
        let base = self.base_dir();
        let mut relative = std::collections::BTreeMap::new();
        let mut resolve = |key: &'static str, p: &mut PathBuf| {
            if p.is_relative() {
                relative.insert(key, p.clone());
                *p = base.join(&*p);
            }
        };
        match &mut self.directory {
            DirectoryConfig::File { path } => resolve("directory.path", path),
            DirectoryConfig::Okta {
                token_file,
                private_key_file,
                ca_file,
                ..
            } => {
                for (key, file) in [
                    ("directory.token_file", token_file),
                    ("directory.private_key_file", private_key_file),
                    ("directory.ca_file", ca_file),
                ] {
                    file.iter_mut().for_each(|p| resolve(key, p));
                }
            }
            DirectoryConfig::Entra {
                client_secret_file,
                certificate_file,
                private_key_file,
                ca_file,
                ..
            } => {
                for (key, file) in [
                    ("directory.client_secret_file", client_secret_file),
                    ("directory.certificate_file", certificate_file),
                    ("directory.private_key_file", private_key_file),
                    ("directory.ca_file", ca_file),
                ] {
                    file.iter_mut().for_each(|p| resolve(key, p));
                }
            }
            DirectoryConfig::Ldap {
                ca_file,
                bind_password_file,
                ..
            } => {
                for (key, file) in [
                    ("directory.ca_file", ca_file),
                    ("directory.bind_password_file", bind_password_file),
                ] {
                    file.iter_mut().for_each(|p| resolve(key, p));
                }
            }
            DirectoryConfig::Scim {
                token_file,
                ca_file,
                ..
            } => {
                for (key, file) in [
                    ("directory.token_file", token_file),
                    ("directory.ca_file", ca_file),
                ] {
                    file.iter_mut().for_each(|p| resolve(key, p));
                }
            }
        }
        if let Some(file) = &mut self.workspace.token_file {
            resolve("workspace.token_file", file);
        }
        if let Some(file) = &mut self.workspace.ca_file {
            resolve("workspace.ca_file", file);
        }
        resolve("state.path", &mut self.state.path);
        if let Some(file) = &mut self.http.trigger_token_file {
            resolve("http.trigger_token_file", file);
        }
        if let Some(email) = &mut self.report.email {
            if let Some(file) = &mut email.password_file {
                resolve("report.email.password_file", file);
            }
            if let Some(file) = &mut email.ca_file {
                resolve("report.email.ca_file", file);
            }
        }
        self.relative_paths = relative;
    }

    /// What to do about a file `key` names that could not be read, after the
    /// system's reason: where a relative path was taken from (the configuration
    /// file's folder, not the working directory), what a missing file needs, and
    /// who must be able to read one refused. Empty for other failures.
    pub fn unreadable_file_hint(&self, key: &str, error: &std::io::Error) -> String {
        use std::io::ErrorKind;
        if error.kind() == ErrorKind::NotFound
            && let Some(hint) = self.unexpanded_path_hint(key)
        {
            return hint;
        }
        match (error.kind(), self.relative_paths.get(key)) {
            (ErrorKind::NotFound, Some(written)) => format!(
                "; {key} is the relative path {:?}, taken from the configuration file's \
                 folder {}, not from the working directory: write it as an absolute path \
                 if the file is elsewhere",
                written.display().to_string(),
                self.base_dir().display()
            ),
            (ErrorKind::NotFound, None) => {
                format!("; create it, or point {key} at the right file")
            }
            // `read_to_string` refuses text that is not UTF-8: Windows PowerShell's
            // `Out-File` and `>` write UTF-16.
            (ErrorKind::InvalidData, _) => "; save it as UTF-8 text (Windows PowerShell's \
                                            `Out-File` and `>` write UTF-16: use \
                                            `Set-Content -Encoding ascii`)"
                .to_owned(),
            (ErrorKind::IsADirectory, _) => {
                format!("; that is a folder: point {key} at the file in it")
            }
            (ErrorKind::PermissionDenied, _) => format!(
                "; it must be readable by the user seatwarden runs as (the service's \
                 user; for a secret, owned by it with mode 0600 or 0400), or point {key} \
                 at a copy that is"
            ),
            _ => String::new(),
        }
    }

    /// The hint for a path `key` names as written with a variable (`$CREDENTIALS_DIRECTORY`,
    /// `${…}`) or systemd's `%d`, which nothing expands in the configuration (nor in
    /// a unit's `Environment=` for `$…`): the file is looked for under that literal
    /// name. systemd's credentials are the usual case, so the hint says where they
    /// are and how a unit passes the folder.
    fn unexpanded_path_hint(&self, key: &str) -> Option<String> {
        let written = match self.relative_paths.get(key) {
            Some(written) => written.clone(),
            None => self
                .files()
                .into_iter()
                .find(|(k, _)| *k == key)
                .map(|(_, file)| file.to_path_buf())?,
        };
        let written = written.to_string_lossy();
        // `~/…` in the file, or quoted in a variable, reaches seatwarden as it is
        // written (only a shell expands a word it sees unquoted), and was called
        // a relative path, which does not say why it is not the home folder.
        if let Some(rest) = written.strip_prefix("~/") {
            let home = std::env::var("HOME")
                .ok()
                .filter(|home| home.starts_with('/'))
                .map(|home| format!("{}/{rest}", home.trim_end_matches('/')))
                .unwrap_or_else(|| format!("/home/USER/{rest}"));
            return Some(format!(
                "; {key} is written {:?}, but seatwarden does not expand ~ (only a shell \
                 does, in a word it sees unquoted): write the home folder in full, such as \
                 {home:?}",
                written.as_ref()
            ));
        }
        if !written.contains('$') && !written.starts_with("%d") {
            return None;
        }
        let file = written.rsplit('/').next().unwrap_or("ID");
        let variable = format!("{ENV_PREFIX}__{}", key.to_uppercase().replace('.', "__"));
        let here = std::env::var("CREDENTIALS_DIRECTORY")
            .map(|dir| format!(" (here {dir})"))
            .unwrap_or_default();
        Some(format!(
            "; {key} is written {:?}, but seatwarden expands no variable nor systemd's %d \
             in it: write the folder in full, such as \
             \"/run/credentials/seatwarden.service/{file}\" for a systemd credential{here}, \
             or set it in the unit, where systemd expands %d: \
             Environment={variable}=%d/{file}",
            written.as_ref()
        ))
    }

    /// The certificates of a `ca_file` key ([`crate::http::read_ca_file`]).
    fn ca_pem(&self, key: &str, file: Option<&Path>) -> Result<Option<Vec<u8>>, ConfigError> {
        file.map(|file| {
            crate::http::read_ca_file(file).map_err(|e| {
                let hint = match &e {
                    crate::http::CaFileError::Unreadable { source, .. } => {
                        self.unreadable_file_hint(key, source)
                    }
                    _ => String::new(),
                };
                self.key_error(key, format!("{e}{hint}"))
            })
        })
        .transpose()
    }

    /// A secret file `key` names could not be read: the error names the key, the
    /// file and what to do ([`Config::unreadable_file_hint`]).
    fn secret_file_error(&self, key: &str, file: &Path, source: std::io::Error) -> ConfigError {
        ConfigError::SecretFile {
            path: self.origin_of(key),
            key: key.to_owned(),
            file: file.to_owned(),
            hint: self.unreadable_file_hint(key, &source),
            source,
        }
    }

    /// Refuses a group name that holds a character that does not show (a
    /// zero-width or no-break space, a control character:
    /// [`crate::names::hidden_in_written_name`], which takes the joiners and the
    /// ideographic space some scripts write names with), pasted from a chat, a
    /// wiki or a spreadsheet. Every name the configuration compares with the
    /// directory's or the workspace's is compared whole, case aside at most:
    /// such a name matches nobody, and a protection so written would keep
    /// nothing, without a word.
    fn refuse_hidden(&self, key: &str, name: &str) -> Result<(), ConfigError> {
        match crate::names::hidden_in_written_name(name) {
            None => Ok(()),
            Some(hidden) => Err(self.key_error(
                key,
                format!(
                    "{name:?} holds {}, which does not show: it would be compared as it is \
                     and match no name; remove it",
                    crate::names::describe(hidden)
                ),
            )),
        }
    }

    /// Refuses a userName (or a pattern of them) that holds any character that
    /// does not show ([`crate::names::hidden_in`]), a joiner between letters
    /// included: no login or email is written with one, and a run holds a
    /// create or rename that would write such a userName
    /// ([`crate::model::HoldReason::HiddenCharacter`]), so a name taken here
    /// would protect or keep an account seatwarden never makes.
    fn refuse_hidden_in_user_name(&self, key: &str, name: &str) -> Result<(), ConfigError> {
        match crate::names::hidden_in(name) {
            None => Ok(()),
            Some(hidden) => Err(self.key_error(
                key,
                format!(
                    "{name:?} holds {}, which does not show: userNames and emails are not \
                     written with one (a run holds what would write it, hidden_character), \
                     and compared as it is the name would match no account; remove it",
                    crate::names::describe(hidden)
                ),
            )),
        }
    }

    /// `safety.distinct_groups` names directory groups as the directory spells
    /// them, spaces and characters that do not show included (they are what
    /// sets such a group apart), so those are not refused; a name no directory
    /// group could have (empty, only such characters, a line break or another
    /// control character) is, and so is a configured group itself, which
    /// cannot be another group than itself.
    fn validate_distinct_groups(&self) -> Result<(), ConfigError> {
        let configured = crate::safety::configured_groups(self);
        for (index, name) in self.safety.distinct_groups.iter().enumerate() {
            let key = format!("safety.distinct_groups[{index}]");
            if crate::names::loosened(name).is_empty() {
                return Err(self.key_error(
                    &key,
                    format!(
                        "{name:?} is not a group name a directory could have: nothing shows \
                         but spaces, quotes or characters that do not show"
                    ),
                ));
            }
            if let Some(c) = name.chars().find(|&c| c.is_control() && c != '\t') {
                return Err(self.key_error(
                    &key,
                    format!(
                        "{name:?} holds {}: no directory group name has one; write the name \
                         on one line, as the directory shows it",
                        crate::names::describe(c)
                    ),
                ));
            }
            if let Some((configured_name, configured_key)) = configured.is_named(name) {
                return Err(self.key_error(
                    &key,
                    format!(
                        "{name:?} is {configured_name:?} ({configured_key}) itself, as group \
                         names are compared (case aside): a configured group cannot be \
                         declared distinct from itself. List here the directory group that \
                         only looks like it (with its quotes or spaces), or remove the entry"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Entries of `safety.distinct_groups` that look like no configured group:
    /// they change nothing (a configured group renamed since, or a typo), and
    /// the look-alike they were meant for would be held again. One that is a
    /// protected group spelt with spaces at its ends is said to be that group.
    fn distinct_groups_alike_nothing(&self) -> Vec<String> {
        let configured = crate::safety::configured_groups(self);
        self.safety
            .distinct_groups
            .iter()
            .enumerate()
            .filter(|(_, name)| configured.declared_distinct(name).is_empty())
            .map(|(index, name)| {
                let key = format!("safety.distinct_groups[{index}]");
                // "IT Admins " is no look-alike of the protected "IT Admins" but
                // the group itself (protected groups are compared trimmed), which
                // "differs from no configured group" would deny.
                let folded = crate::policy::fold_group_name(name);
                if let Some(protected) = self
                    .safety
                    .protected_groups
                    .iter()
                    .find(|group| crate::policy::fold_group_name(group) == folded)
                {
                    return format!(
                        "{key} = {name:?} in {}: is the protected group {protected:?} \
                         (safety.protected_groups): protected groups are compared without \
                         the spaces at their ends, so its members stay protected and \
                         declaring it distinct changes nothing; remove it",
                        self.origin_of(&key).display()
                    );
                }
                format!(
                    "{key} = {name:?} in {}: differs from no configured group \
                     (policy.scope_groups, policy.mapping, safety.protected_groups) only in \
                     spaces, quotes or characters that do not show, so declaring it distinct \
                     changes nothing; remove it, or correct it if the configured group was renamed",
                    self.origin_of(&key).display()
                )
            })
            .collect()
    }

    /// Entries of `safety.distinct_groups` that look like a protected group
    /// (`safety.protected_groups`): the declaration stands, but it takes the
    /// look-alike's members out of the protection a mistyped protected group
    /// would have given them (nothing of theirs is held any more), so it is
    /// said, naming the entry, the protected group and the file.
    fn distinct_groups_like_protected(&self) -> Vec<String> {
        let configured = crate::safety::configured_groups(self);
        self.safety
            .distinct_groups
            .iter()
            .enumerate()
            .filter_map(|(index, name)| {
                let protected: Vec<crate::names::LookAlike> = configured
                    .declared_distinct(name)
                    .into_iter()
                    .filter(|l| l.key == crate::names::PROTECTED_GROUPS_KEY)
                    .collect();
                let differs = protected.first()?.differs.clone();
                let key = format!("safety.distinct_groups[{index}]");
                Some(format!(
                    "{key} = {name:?} in {}: looks like the protected group {}, differing only \
                     in {differs}, and is declared another group: its members are not \
                     protected by it, and nothing of theirs is held as a look-alike's; if it is the \
                     protected group mistyped in the directory, remove the entry and rename \
                     the group there",
                    self.origin_of(&key).display(),
                    crate::names::configured_of(&protected)
                ))
            })
            .collect()
    }

    fn key_error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let message = message.into();
        ConfigError::Key {
            path: self.origin_of(key),
            message: without_url_credentials(key, &message),
            key: key.to_owned(),
        }
    }

    /// Where `key`'s value came from, for an error about it: the variable that
    /// set it, else the file.
    pub fn origin_of(&self, key: &str) -> PathBuf {
        // `report.email.to[1]` came from the variable of `report.email.to`.
        let whole = key.split('[').next().unwrap_or(key);
        let from_env =
            |key: &str| value_source(&self.source, Some("the environment".to_owned()), Some(key));
        if self.from_env.contains(whole) {
            from_env(whole)
        } else if let Some(variable) = table_made_by_a_variable(whole, &self.source, &self.from_env)
        {
            from_env(&variable)
        } else {
            self.source.clone()
        }
    }

    /// Refuses an id the connector puts in a URL path that cannot stand there
    /// (`.`, `..`): the request would go elsewhere.
    fn path_segment(&self, key: &str, id: Option<&str>) -> Result<(), ConfigError> {
        match id.map(crate::http::path_segment) {
            Some(Err(e)) => Err(self.key_error(key, e.to_string())),
            _ => Ok(()),
        }
    }

    /// Refuses `url` when it would send `what` unencrypted to a host that is not
    /// loopback (a plain `http://`, `ldap://` or `smtp://`), unless `allow_key` is
    /// set (`allowed`).
    fn refuse_cleartext(
        &self,
        key: &str,
        url: &url::Url,
        what: &str,
        allow_key: &str,
        allowed: bool,
    ) -> Result<(), ConfigError> {
        let secure = match url.scheme() {
            "http" => "https://",
            "ldap" => "ldaps:// or start_tls = true",
            "smtp" => "smtps:// or smtp://…?tls=starttls",
            _ => return Ok(()),
        };
        if allowed || host_is_loopback(url) {
            return Ok(());
        }
        Err(self.key_error(
            key,
            format!(
                "{}:// sends {what} unencrypted to {}: use {secure}, or set {allow_key} = true \
                 if the network in between is trusted (a sidecar that adds TLS)",
                url.scheme(),
                url.host_str().unwrap_or("the server")
            ),
        ))
    }

    /// Refuses a URL with a username or password in it (`https://svc:pw@host`):
    /// URLs are not secrets here, they go into the state database, reports,
    /// emails and logs, and the HTTP client would send them as a Basic login
    /// besides the configured credential. `instead` names the keys that hold the
    /// credential.
    fn refuse_credentials_in_url(
        &self,
        key: &str,
        url: &url::Url,
        instead: &str,
    ) -> Result<(), ConfigError> {
        if url.username().is_empty() && url.password().is_none() {
            return Ok(());
        }
        Err(self.key_error(
            key,
            format!(
                "holds a username or password (user:password@host): a URL is stored in the \
                 state database and shown in reports, emails and logs, so credentials do not \
                 belong in it; remove them and set {instead}"
            ),
        ))
    }

    /// The secrets given inline, each with its key.
    fn inline_secrets(&self) -> Vec<(&'static str, &SecretString)> {
        let mut secrets = Vec::new();
        let directory = match &self.directory {
            DirectoryConfig::File { .. } => None,
            DirectoryConfig::Okta { token, .. } | DirectoryConfig::Scim { token, .. } => {
                token.as_ref().map(|t| ("directory.token", t))
            }
            DirectoryConfig::Entra { client_secret, .. } => client_secret
                .as_ref()
                .map(|s| ("directory.client_secret", s)),
            DirectoryConfig::Ldap { bind_password, .. } => bind_password
                .as_ref()
                .map(|p| ("directory.bind_password", p)),
        };
        secrets.extend(directory);
        if let Some(token) = &self.workspace.token {
            secrets.push(("workspace.token", token));
        }
        if let Some(password) = self.report.email.as_ref().and_then(|e| e.password.as_ref()) {
            secrets.push(("report.email.password", password));
        }
        secrets
    }

    /// An inline secret that is empty (or only spaces) is refused like an empty
    /// secret file: an empty LDAP bind password is an unauthenticated bind (RFC
    /// 4513), which some servers accept and answer with a partial view, and an
    /// empty token only fails later, at the provider. An inline directory token
    /// is refused as [`token_mistake`] finds it wrong.
    fn refuse_empty_secrets(&self) -> Result<(), ConfigError> {
        use secrecy::ExposeSecret;
        for (key, secret) in self.inline_secrets() {
            if secret.expose_secret().trim().is_empty() {
                let file = key.rsplit('.').next().unwrap_or(key);
                // The error names where it came from: a variable set but empty (a
                // shell's unset `$TOKEN`), or the file's `""`.
                let what = match self.from_env.contains(key) {
                    true => "is empty: the variable is set, to nothing",
                    false => "is empty",
                };
                return Err(self.key_error(
                    key,
                    format!("{what}; set the secret, or {file}_file instead of {file}"),
                ));
            }
            if key == "directory.token"
                && let Some(mistake) = token_mistake(secret.expose_secret())
            {
                return Err(self.key_error(key, mistake));
            }
            if key == "directory.client_secret"
                && let Some(mistake) = client_secret_mistake(secret.expose_secret())
            {
                return Err(self.key_error(key, mistake));
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.refuse_empty_secrets()?;
        self.validate_directory()?;
        let url = url::Url::parse(&self.workspace.url).map_err(|e| {
            self.key_error("workspace.url", not_a_url(&self.workspace.url, "https", e))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(self.key_error("workspace.url", "must be an http:// or https:// URL"));
        }
        if let Some(mistake) = scim_base_url_mistake(&url) {
            return Err(self.key_error("workspace.url", mistake));
        }
        self.refuse_credentials_in_url(
            "workspace.url",
            &url,
            "workspace.token_file (or workspace.token)",
        )?;
        self.refuse_cleartext(
            "workspace.url",
            &url,
            "the workspace token",
            "workspace.allow_cleartext",
            self.workspace.allow_cleartext,
        )?;
        match (&self.workspace.token, &self.workspace.token_file) {
            (Some(_), Some(_)) => {
                return Err(self.key_error(
                    "workspace.token",
                    "set either token or token_file, not both",
                ));
            }
            (None, None) => {
                return Err(self.key_error(
                    "workspace.token",
                    "missing: set workspace.token_file (recommended) or workspace.token",
                ));
            }
            _ => {}
        }
        let lists = [
            ("policy.scope_groups", &self.policy.scope_groups),
            ("safety.protected", &self.safety.protected),
            ("safety.protected_groups", &self.safety.protected_groups),
        ];
        for (key, list) in lists {
            if list.iter().any(String::is_empty) {
                return Err(self.key_error(
                    key,
                    "holds an empty name (an empty environment variable, or a stray comma?); \
                     an empty list is written []",
                ));
            }
            for name in list {
                match key {
                    "safety.protected" => self.refuse_hidden_in_user_name(key, name)?,
                    _ => self.refuse_hidden(key, name)?,
                }
            }
        }
        self.validate_distinct_groups()?;
        for (index, mapping) in self.policy.mapping.iter().enumerate() {
            for (field, name) in [
                ("group", &mapping.group),
                ("workspace_group", &mapping.workspace_group),
            ] {
                let key = format!("policy.mapping[{index}].{field}");
                if name.trim().is_empty() || name.trim() != name {
                    return Err(self.key_error(
                        &key,
                        format!("{name:?}: names are compared exactly; empty, or space around it"),
                    ));
                }
                self.refuse_hidden(&key, name)?;
            }
        }
        self.role_attribute()?;
        if self.workspace.page_size == 0 {
            let key = "workspace.page_size";
            return Err(self.key_error(key, out_of_range(key, 0, None)));
        }
        let concurrency = self.workspace.max_concurrency;
        if concurrency == 0 || concurrency > MAX_CONCURRENCY {
            let key = "workspace.max_concurrency";
            return Err(self.key_error(key, too_concurrent(key, concurrency)));
        }
        if self.workspace.requests_per_second == 0 {
            let key = "workspace.requests_per_second";
            return Err(self.key_error(key, out_of_range(key, 0, None)));
        }
        parse_timeout(&self.workspace.timeout)
            .map_err(|e| self.key_error("workspace.timeout", e))?;
        self.workspace_retry()?;
        let percents = [
            (
                "safety.max_deprovision_percent",
                self.safety.max_deprovision_percent,
            ),
            (
                "safety.max_membership_removal_percent",
                self.safety.max_membership_removal_percent,
            ),
            (
                "safety.max_role_downgrade_percent",
                self.safety.max_role_downgrade_percent,
            ),
            (
                "safety.max_deletion_percent",
                self.safety.max_deletion_percent,
            ),
            ("safety.max_rename_percent", self.safety.max_rename_percent),
            (
                "safety.max_deprovision_percent_per_day",
                self.safety.max_deprovision_percent_per_day,
            ),
            (
                "safety.max_membership_removal_percent_per_day",
                self.safety.max_membership_removal_percent_per_day,
            ),
            (
                "safety.max_role_downgrade_percent_per_day",
                self.safety.max_role_downgrade_percent_per_day,
            ),
            (
                "safety.max_deletion_percent_per_day",
                self.safety.max_deletion_percent_per_day,
            ),
            (
                "safety.max_rename_percent_per_day",
                self.safety.max_rename_percent_per_day,
            ),
            (
                "safety.max_directory_shrink_percent",
                self.safety.max_directory_shrink_percent,
            ),
        ];
        for (key, percent) in percents {
            if !(0.0..=100.0).contains(&percent) {
                return Err(self.key_error(key, "must be between 0 and 100"));
            }
        }
        parse_duration(&self.safety.settle).map_err(|e| self.key_error("safety.settle", e))?;
        match (self.deprovision.action, &self.deprovision.delete_after) {
            (DeprovisionAction::Delete, None) => {
                return Err(self.key_error(
                    "deprovision.delete_after",
                    "missing: deprovision.action = \"delete\" needs a retention period, how \
                     long an account stays deactivated before it is deleted (e.g. \"30d\"; \
                     \"0s\" deletes at once, without one)",
                ));
            }
            (DeprovisionAction::Deactivate, Some(_)) => {
                return Err(self.key_error(
                    "deprovision.delete_after",
                    "only used with deprovision.action = \"delete\"; accounts are never \
                     deleted while action is \"deactivate\"",
                ));
            }
            (_, Some(text)) => {
                parse_duration(text).map_err(|e| self.key_error("deprovision.delete_after", e))?;
            }
            (DeprovisionAction::Deactivate, None) => {}
        }
        parse_duration(&self.safety.circuit.cool_down)
            .map_err(|e| self.key_error("safety.circuit.cool_down", e))?;
        if !(self.safety.circuit.failure_ratio > 0.0 && self.safety.circuit.failure_ratio <= 1.0) {
            return Err(self.key_error(
                "safety.circuit.failure_ratio",
                "must be above 0 and at most 1",
            ));
        }
        self.daemon_settings()?;
        if self.safety.circuit.window == 0 {
            let key = "safety.circuit.window";
            return Err(self.key_error(key, out_of_range(key, 0, None)));
        }
        self.validate_report()?;
        self.exceptions()?;
        for (index, entry) in self.safety.exceptions.iter().enumerate() {
            self.refuse_hidden_in_user_name(
                &format!("safety.exceptions[{index}].user_name"),
                entry.user_name.trim(),
            )?;
        }
        for (i, mapping) in self.policy.mapping.iter().enumerate() {
            if mapping.group.trim().is_empty() || mapping.workspace_group.trim().is_empty() {
                return Err(self.key_error(
                    &format!("policy.mapping[{i}]"),
                    "group and workspace_group must not be empty",
                ));
            }
        }
        Ok(())
    }

    fn validate_report(&self) -> Result<(), ConfigError> {
        if self
            .report
            .name
            .as_deref()
            .is_some_and(|n| n.trim().is_empty())
        {
            return Err(self.key_error("report.name", "must not be empty when set"));
        }
        self.report_timezone()?;
        let Some(email) = &self.report.email else {
            return Ok(());
        };
        crate::mail::SmtpEndpoint::parse(&email.smtp_url)
            .map_err(|e| self.key_error("report.email.smtp_url", e))?;
        crate::mail::validate_address(&email.from)
            .map_err(|e| self.key_error("report.email.from", e))?;
        if email.to.is_empty() {
            return Err(self.key_error("report.email.to", "at least one recipient is required"));
        }
        for (i, to) in email.to.iter().enumerate() {
            crate::mail::validate_address(to).map_err(|e| {
                // Mail clients separate recipients with `;` (Outlook) or `,`:
                // pasted as one entry, they read as one address that is none.
                let several = if to.contains([';', ',']) {
                    " (several addresses in one entry: give each its own, to = \
                     [\"a@example.com\", \"b@example.com\"], or in \
                     SEATWARDEN__REPORT__EMAIL__TO separated by commas)"
                } else {
                    ""
                };
                self.key_error(&format!("report.email.to[{i}]"), format!("{e}{several}"))
            })?;
        }
        parse_quiet_period(&email.quiet_period)
            .map_err(|e| self.key_error("report.email.quiet_period", e))?;
        parse_duration(&email.resolve_after)
            .map_err(|e| self.key_error("report.email.resolve_after", e))?;
        parse_timeout(&email.timeout).map_err(|e| self.key_error("report.email.timeout", e))?;
        let has_password = email.password.is_some() || email.password_file.is_some();
        if email.password.is_some() && email.password_file.is_some() {
            return Err(self.key_error(
                "report.email.password",
                "set either password or password_file, not both",
            ));
        }
        if has_password != email.username.is_some() {
            return Err(self.key_error(
                "report.email.username",
                "username and password (or password_file) go together",
            ));
        }
        if has_password
            && let Ok(endpoint) = crate::mail::SmtpEndpoint::parse(&email.smtp_url)
            && endpoint.tls == crate::mail::TlsMode::None
            && let Ok(url) = url::Url::parse(&email.smtp_url)
        {
            self.refuse_cleartext(
                "report.email.smtp_url",
                &url,
                "the SMTP login",
                "report.email.allow_cleartext",
                email.allow_cleartext,
            )?;
        }
        Ok(())
    }

    /// What is allowed but worth a warning, each naming its key: logged when the
    /// configuration is loaded (and reloaded), printed by `check-config`. A
    /// `SEATWARDEN_…` variable that is not read, plain
    /// SMTP to a remote relay, each secret file that other users can read or
    /// change ([`loose_secret_file`] says which modes, and why group read passes),
    /// and a configuration file others can change ([`config_changed_by_others`]).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings: Vec<String> = self
            .unread_variables
            .iter()
            .map(|name| self.unread_variable_warning(name))
            .collect();
        // A relay without TLS is common on an internal network (port 25), so it is
        // not refused; but digests and alerts name the people who leave.
        if let Some(email) = &self.report.email
            && !email.allow_cleartext
            && let Ok(endpoint) = crate::mail::SmtpEndpoint::parse(&email.smtp_url)
            && endpoint.tls == crate::mail::TlsMode::None
            && let Ok(url) = url::Url::parse(&email.smtp_url)
            && !host_is_loopback(&url)
        {
            warnings.push(format!(
                "report.email.smtp_url: smtp:// sends the digests and alerts, which name the \
                 people who leave, unencrypted to {}: use smtps:// or \
                 smtp://…?tls=starttls, or set report.email.allow_cleartext = true if the \
                 network in between is trusted",
                endpoint.host
            ));
        }
        for (key, file) in self.secret_files() {
            if let Some(warning) = loose_secret_file(key, file) {
                warnings.push(warning);
            }
        }
        let inline_in_file: Vec<&str> = self
            .inline_secrets()
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| !self.from_env.contains(*key))
            .collect();
        if let Some(warning) = loose_config_with_secrets(&self.source, &inline_in_file) {
            warnings.push(warning);
        }
        if let Some(warning) = config_changed_by_others(&self.source) {
            warnings.push(warning);
        }
        if let Ok(settings) = self.daemon_settings() {
            let now = chrono::Utc::now();
            if let Some(warning) = sweeps_too_far_apart(&settings, now) {
                warnings.push(warning);
            }
            if let Some(warning) = reconcile_limit_past_sla(&settings) {
                warnings.push(warning);
            }
            warnings.extend(fires_within_a_minute(&settings));
            if let Some(email) = &self.report.email
                && let Ok(resolve_after) = parse_duration(&email.resolve_after)
                && let Some(warning) =
                    resolutions_held_within_a_reconcile(resolve_after, &settings, now)
            {
                warnings.push(warning);
            }
            if let DirectoryConfig::Okta { app_id: None, .. } = &self.directory
                && let Some(warning) = okta_deletions_wait_for_reconciles(&settings, now)
            {
                warnings.push(warning);
            }
        }
        if let Some(warning) = missing_state_folder(&self.state.path) {
            warnings.push(warning);
        }
        if let (Ok(exceptions), Ok(tz)) = (self.exceptions(), self.report_timezone()) {
            warnings.extend(exceptions_to_look_at(&exceptions, chrono::Utc::now(), tz));
        }
        warnings.extend(mappings_repeated(&self.policy.mapping));
        warnings.extend(self.distinct_groups_alike_nothing());
        warnings.extend(self.distinct_groups_like_protected());
        warnings.extend(percentages_allowing_none(
            &self.guard_settings(),
            &self.admin_command(),
        ));
        warnings.extend(self.day_limits_below_run_limits());
        let zones = std::iter::once(("schedule.timezone", &self.schedule.timezone))
            .chain(self.report.timezone.iter().map(|z| ("report.timezone", z)));
        for (key, zone) in zones {
            if let Some(warning) = zone_without_daylight_saving(key, zone) {
                warnings.push(warning);
            }
            if let Some(warning) = zone_with_posix_sign(key, zone) {
                warnings.push(warning);
            }
        }
        if let DirectoryConfig::Entra {
            graph_url,
            login_url,
            ..
        } = &self.directory
            && let Some(warning) = entra_clouds_differ(graph_url.as_ref(), login_url.as_ref())
        {
            warnings.push(warning);
        }
        warnings
    }

    /// Each 24 h limit below the per-run limit of its class, the count and the
    /// percentage alike (`safety.max_deprovisions_per_day` under
    /// `safety.max_deprovisions`): the 24 h limit is met first, and the per-run
    /// one never applies. Almost always a typo, or the two keys read the wrong
    /// way round (a per-run value raised past the 24 h default, say), so it is
    /// warned about, not refused. Each value says where it came from when that
    /// is not the file: a variable, or the default (a key the file does not
    /// write; one it writes with the default's value is the file's). A 24 h
    /// limit of 0 is a deliberate "nothing without a human" and is not warned
    /// about here.
    fn day_limits_below_run_limits(&self) -> Vec<String> {
        /// One key's value as the warning states it, and whether it is the default.
        struct Value {
            key: String,
            text: String,
            default: bool,
        }
        let settings = self.guard_settings();
        let defaults = GuardSettings::default();
        let file = self.source.display();
        let mut warnings = Vec::new();
        for class in crate::model::ActionClass::ALL {
            let (limits, default) = (settings.limits(class), defaults.limits(class));
            let count = |key: String, value: usize, default: usize| Value {
                key,
                text: value.to_string(),
                default: value == default,
            };
            let percent = |key: String, value: f64, default: f64| Value {
                key,
                text: value.to_string(),
                default: value == default,
            };
            // (per run, 24 h, whether the 24 h limit is below and not 0)
            let pairs = [
                (
                    count(format!("max_{class}s"), limits.per_run, default.per_run),
                    count(
                        format!("max_{class}s_per_day"),
                        limits.per_day,
                        default.per_day,
                    ),
                    limits.per_day > 0 && limits.per_day < limits.per_run,
                ),
                (
                    percent(
                        format!("max_{class}_percent"),
                        limits.percent,
                        default.percent,
                    ),
                    percent(
                        format!("max_{class}_percent_per_day"),
                        limits.percent_per_day,
                        default.percent_per_day,
                    ),
                    limits.percent_per_day > 0.0 && limits.percent_per_day < limits.percent,
                ),
            ];
            for (run, day, below) in pairs {
                if !below {
                    continue;
                }
                let stated = |value: &Value| {
                    let key = format!("safety.{}", value.key);
                    let origin = self.origin_of(&key);
                    if origin != self.source {
                        format!("{key} = {} ({})", value.text, origin.display())
                    } else if value.default && !self.from_file.contains(&key) {
                        format!("{key} = {} (the default)", value.text)
                    } else {
                        format!("{key} = {}", value.text)
                    }
                };
                warnings.push(format!(
                    "{} is below {} in {file}: the 24 h limit is met first, so the per-run \
                     limit can never be reached; set {} to {} or more, or {} to {} or less, \
                     whichever was meant",
                    stated(&day),
                    stated(&run),
                    day.key,
                    run.text,
                    run.key,
                    day.text,
                ));
            }
        }
        warnings
    }

    /// The warning for a variable [`is_unread_variable`], with the override it
    /// was probably meant to be: `SEATWARDEN_WORKSPACE__TOKEN` and
    /// `SEATWARDEN_STATE_PATH` lack a `_` after the prefix, or between a section
    /// and its key (the sections are the loaded configuration's tables).
    fn unread_variable_warning(&self, name: &str) -> String {
        let rest = name
            .get(ENV_PREFIX.len()..)
            .unwrap_or_default()
            .trim_start_matches('_')
            .to_uppercase();
        let meant = if rest.contains("__") {
            Some(rest)
        } else {
            toml::Value::try_from(self)
                .ok()
                .and_then(|loaded| loaded.as_table().and_then(|t| sections_split(t, &rest)))
        };
        let meant = match meant {
            Some(meant) => format!("; did you mean {ENV_PREFIX}__{meant}?"),
            None => String::new(),
        };
        format!(
            "environment variable {name} is not read: an override is spelt \
             {ENV_PREFIX}__SECTION__KEY, with two underscores after {ENV_PREFIX} and \
             between the levels{meant}"
        )
    }

    /// Every secret file the configuration names, each with its key. Certificates
    /// and CA files are public and not among them.
    fn secret_files(&self) -> Vec<(&'static str, &Path)> {
        let mut files: Vec<(&'static str, &Option<PathBuf>)> = match &self.directory {
            DirectoryConfig::File { .. } => Vec::new(),
            DirectoryConfig::Okta {
                token_file,
                private_key_file,
                ..
            } => vec![
                ("directory.token_file", token_file),
                ("directory.private_key_file", private_key_file),
            ],
            DirectoryConfig::Entra {
                client_secret_file,
                private_key_file,
                ..
            } => vec![
                ("directory.client_secret_file", client_secret_file),
                ("directory.private_key_file", private_key_file),
            ],
            DirectoryConfig::Ldap {
                bind_password_file, ..
            } => vec![("directory.bind_password_file", bind_password_file)],
            DirectoryConfig::Scim { token_file, .. } => {
                vec![("directory.token_file", token_file)]
            }
        };
        files.push(("workspace.token_file", &self.workspace.token_file));
        files.push(("http.trigger_token_file", &self.http.trigger_token_file));
        if let Some(email) = &self.report.email {
            files.push(("report.email.password_file", &email.password_file));
        }
        files
            .into_iter()
            .filter_map(|(key, file)| Some((key, file.as_deref()?)))
            .collect()
    }

    /// The command people run seatwarden's commands with (`report.admin_command`).
    pub fn admin_command(&self) -> String {
        self.report
            .admin_command
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .unwrap_or(crate::model::DEFAULT_ADMIN_COMMAND)
            .to_owned()
    }

    /// The name in subjects and titles: `report.name`, else the workspace's host.
    pub fn report_name(&self) -> String {
        self.report.name.clone().unwrap_or_else(|| {
            url::Url::parse(&self.workspace.url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| "seatwarden".to_owned())
        })
    }

    pub fn report_timezone(&self) -> Result<chrono_tz::Tz, ConfigError> {
        let (key, zone) = match &self.report.timezone {
            Some(zone) => ("report.timezone", zone),
            None => ("schedule.timezone", &self.schedule.timezone),
        };
        parse_time_zone(zone).map_err(|e| self.key_error(key, e))
    }

    /// Reads every secret (never printing it) and parses every key, certificate and
    /// export the configuration names: what `check-config` does.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        self.check_credentials()?;
        self.directory()
            .check_files()
            .map_err(|e| self.directory_error(e))
    }

    /// [`Config::check_files`] without the directory export: the daemon's check
    /// before it reports ready and at each reload, so a credential the service
    /// cannot use fails at start, not at the first scheduled run behind a healthy
    /// `/healthz`. An export is data another job writes: one missing for a moment
    /// at boot is a failed run and an alert, not a daemon that never starts.
    /// Secrets are still read again at each use, so rotation keeps working.
    pub fn check_credentials(&self) -> Result<(), ConfigError> {
        self.workspace_token()?;
        self.ca_pem("workspace.ca_file", self.workspace.ca_file.as_deref())?;
        self.mail_settings()?;
        self.trigger_token()?;
        self.directory()
            .check_credentials()
            .map_err(|e| self.directory_error(e))
    }

    /// [`Config::unreadable_file_hint`] for a directory error about a file the
    /// configuration names (the export, a secret file); empty for any other.
    pub fn directory_file_hint(&self, e: &crate::directory::DirectoryError) -> String {
        use crate::directory::DirectoryError;
        match e {
            DirectoryError::Io { source, .. } => {
                self.unreadable_file_hint("directory.path", source)
            }
            DirectoryError::SecretFile { key, source, .. } => {
                self.unreadable_file_hint(key, source)
            }
            _ => String::new(),
        }
    }

    fn directory_error(&self, e: crate::directory::DirectoryError) -> ConfigError {
        use crate::directory::DirectoryError;
        // The file's error names the key; where its value came from (a variable)
        // goes in front, as for every other key. An export that cannot be read,
        // does not parse, or is neither JSON nor CSV is the file `directory.path`
        // names, wherever that was set.
        let path = match &e {
            DirectoryError::Io { .. }
            | DirectoryError::Invalid { .. }
            | DirectoryError::UnsupportedFormat { .. }
            | DirectoryError::Task { .. } => self.origin_of("directory.path"),
            DirectoryError::SecretFile { key, .. } => self.origin_of(key),
            // A connector's settings (`directory.token_file … is empty`) or its
            // scope (`check policy.scope_groups`) name the key in their text: one
            // a variable set is blamed on that variable, not on a file without it.
            _ => {
                let text = e.to_string();
                self.from_env
                    .iter()
                    .find(|key| names_key(&text, key))
                    .map_or_else(|| self.source.clone(), |key| self.origin_of(key))
            }
        };
        let hint = self.directory_file_hint(&e);
        ConfigError::Invalid {
            path,
            message: format!("directory: {e}{hint}"),
        }
    }

    /// Delivery settings with the password read (from `password_file` at each call,
    /// so a rotated credential is picked up); `None` without `[report.email]`.
    pub fn mail_settings(&self) -> Result<Option<crate::mail::MailSettings>, ConfigError> {
        let Some(email) = &self.report.email else {
            return Ok(None);
        };
        let endpoint = crate::mail::SmtpEndpoint::parse(&email.smtp_url)
            .map_err(|e| self.key_error("report.email.smtp_url", e))?;
        let password = match (&email.password, &email.password_file) {
            (Some(password), _) => Some(password.clone()),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file).map_err(|source| {
                    self.secret_file_error("report.email.password_file", file, source)
                })?;
                let password = secret_in_file(&text).ok_or_else(|| {
                    self.key_error(
                        "report.email.password_file",
                        format!("{} is empty", file.display()),
                    )
                })?;
                Some(SecretString::from(password.to_owned()))
            }
            (None, None) => None,
        };
        let ca_pem = self.ca_pem("report.email.ca_file", email.ca_file.as_deref())?;
        Ok(Some(crate::mail::MailSettings {
            endpoint,
            username: email.username.clone(),
            password,
            from: email.from.clone(),
            to: email.to.clone(),
            ca_pem,
            timeout: parse_timeout(&email.timeout)
                .map_err(|e| self.key_error("report.email.timeout", e))?,
            quiet_period: parse_quiet_period(&email.quiet_period)
                .map_err(|e| self.key_error("report.email.quiet_period", e))?,
            resolve_after: parse_duration(&email.resolve_after)
                .map_err(|e| self.key_error("report.email.resolve_after", e))?,
            // Short: a command waits for it. A longer outage is the outbox's job
            // (rescheduled with backoff across calls and restarts).
            retry: RetryPolicy {
                max_retries: 3,
                min_delay: Duration::from_millis(500),
                max_delay: Duration::from_secs(5),
                max_retry_after: Duration::from_secs(5),
            },
        }))
    }

    /// How workspace requests are retried: `workspace.retries` and
    /// `workspace.retry_delay`, the rest as by default.
    fn workspace_retry(&self) -> Result<RetryPolicy, ConfigError> {
        let min_delay = match parse_duration(&self.workspace.retry_delay) {
            Ok(Duration::ZERO) => Err("must be longer than zero".to_owned()),
            parsed => parsed,
        }
        .map_err(|e| self.key_error("workspace.retry_delay", e))?;
        if self.workspace.retries > MAX_RETRIES {
            let key = "workspace.retries";
            return Err(self.key_error(
                key,
                format!(
                    "{}: past {MAX_RETRIES} a request that keeps failing is retried for over \
                     ten minutes (30 s apart), holding up the run and every deprovision \
                     behind it",
                    out_of_range(key, self.workspace.retries, None)
                ),
            ));
        }
        Ok(RetryPolicy {
            max_retries: self.workspace.retries,
            min_delay,
            ..RetryPolicy::default()
        })
    }

    /// The directory connector's keys: one way to authenticate, http(s) URLs,
    /// limits above zero. Secret files are read at use, not here.
    fn validate_directory(&self) -> Result<(), ConfigError> {
        let allowed = match &self.directory {
            DirectoryConfig::File { .. } => true,
            DirectoryConfig::Okta {
                allow_cleartext, ..
            }
            | DirectoryConfig::Entra {
                allow_cleartext, ..
            }
            | DirectoryConfig::Ldap {
                allow_cleartext, ..
            }
            | DirectoryConfig::Scim {
                allow_cleartext, ..
            } => *allow_cleartext,
        };
        let credentials = match &self.directory {
            DirectoryConfig::Okta { .. } => {
                "directory.token_file (an API token) or directory.client_id + \
                 directory.private_key_file (an OAuth service app)"
            }
            DirectoryConfig::Entra { .. } => {
                "directory.client_secret_file, or directory.certificate_file + \
                 directory.private_key_file"
            }
            _ => "directory.token_file (or directory.token)",
        };
        let http_url = |key: &str, url: &url::Url| {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(self.key_error(key, "must be an http:// or https:// URL"));
            }
            self.refuse_credentials_in_url(key, url, credentials)?;
            self.refuse_cleartext(
                key,
                url,
                "the directory's credentials",
                "directory.allow_cleartext",
                allowed,
            )
        };
        let (max_concurrency, timeout) = match &self.directory {
            DirectoryConfig::File { .. } => return Ok(()),
            DirectoryConfig::Okta {
                url,
                token,
                token_file,
                client_id,
                private_key_file,
                key_id,
                app_id,
                max_concurrency,
                timeout,
                ..
            } => {
                http_url("directory.url", url)?;
                if let Some(mistake) = okta_url_mistake(url) {
                    return Err(self.key_error("directory.url", mistake));
                }
                let ssws = token.is_some() || token_file.is_some();
                let oauth = client_id.is_some() || private_key_file.is_some();
                if token.is_some() && token_file.is_some() {
                    return Err(self.key_error(
                        "directory.token",
                        "set either token or token_file, not both",
                    ));
                }
                if ssws && oauth {
                    return Err(self.key_error(
                        "directory.token_file",
                        "set either an API token (token_file) or an OAuth service app \
                         (client_id + private_key_file), not both",
                    ));
                }
                if !ssws && !oauth {
                    return Err(self.key_error(
                        "directory.token_file",
                        "missing: set directory.token_file (an Okta API token) or \
                         directory.client_id + directory.private_key_file (an OAuth service app)",
                    ));
                }
                if oauth && (client_id.is_none() || private_key_file.is_none()) {
                    return Err(self.key_error(
                        "directory.private_key_file",
                        "an OAuth service app needs both client_id and private_key_file",
                    ));
                }
                if key_id.is_some() && !oauth {
                    return Err(self.key_error(
                        "directory.key_id",
                        "only used with client_id + private_key_file",
                    ));
                }
                self.path_segment("directory.app_id", app_id.as_deref())?;
                (*max_concurrency, timeout)
            }
            DirectoryConfig::Entra {
                tenant_id,
                client_id,
                client_secret,
                client_secret_file,
                certificate_file,
                private_key_file,
                graph_url,
                login_url,
                app_id,
                max_concurrency,
                timeout,
                ..
            } => {
                if tenant_id.trim().is_empty() {
                    return Err(self.key_error("directory.tenant_id", "must not be empty"));
                }
                self.path_segment("directory.tenant_id", Some(tenant_id))?;
                self.path_segment("directory.app_id", app_id.as_deref())?;
                if client_id.trim().is_empty() {
                    return Err(self.key_error("directory.client_id", "must not be empty"));
                }
                if let Some(url) = graph_url {
                    http_url("directory.graph_url", url)?;
                    if let Some(version) = url
                        .path_segments()
                        .and_then(|mut segments| segments.rfind(|s| !s.is_empty()))
                        .filter(|last| matches!(*last, "v1.0" | "beta"))
                    {
                        return Err(self.key_error(
                            "directory.graph_url",
                            format!(
                                "ends in the API version /{version}, which seatwarden adds \
                                 itself (it reads v1.0): write the URL without it, such as \
                                 \"https://graph.microsoft.com\""
                            ),
                        ));
                    }
                }
                if let Some(url) = login_url {
                    http_url("directory.login_url", url)?;
                }
                let secret = client_secret.is_some() || client_secret_file.is_some();
                let certificate = certificate_file.is_some() || private_key_file.is_some();
                if client_secret.is_some() && client_secret_file.is_some() {
                    return Err(self.key_error(
                        "directory.client_secret",
                        "set either client_secret or client_secret_file, not both",
                    ));
                }
                if secret && certificate {
                    return Err(self.key_error(
                        "directory.client_secret_file",
                        "set either a client secret or a certificate, not both",
                    ));
                }
                if !secret && !certificate {
                    return Err(self.key_error(
                        "directory.client_secret_file",
                        "missing: set directory.client_secret_file, or \
                         directory.certificate_file + directory.private_key_file",
                    ));
                }
                if certificate && (certificate_file.is_none() || private_key_file.is_none()) {
                    return Err(self.key_error(
                        "directory.certificate_file",
                        "a certificate credential needs both certificate_file and private_key_file",
                    ));
                }
                (*max_concurrency, timeout)
            }
            DirectoryConfig::Ldap { .. } => return self.validate_ldap(),
            DirectoryConfig::Scim {
                url,
                token,
                token_file,
                page_size,
                max_concurrency,
                timeout,
                ..
            } => {
                http_url("directory.url", url)?;
                if url.query().is_some() {
                    return Err(self.key_error("directory.url", "must not have a query"));
                }
                self.one_secret(
                    ("directory.token", token.is_some()),
                    ("directory.token_file", token_file.is_some()),
                    "missing: set directory.token_file (the provider's SCIM bearer token)",
                )?;
                if *page_size == 0 {
                    let key = "directory.page_size";
                    return Err(self.key_error(key, out_of_range(key, 0, Some(false))));
                }
                (*max_concurrency, timeout)
            }
        };
        if max_concurrency == 0 || max_concurrency > MAX_CONCURRENCY {
            let key = "directory.max_concurrency";
            return Err(self.key_error(key, too_concurrent(key, max_concurrency)));
        }
        parse_timeout(timeout).map_err(|e| self.key_error("directory.timeout", e))?;
        Ok(())
    }

    /// A secret given exactly once: inline or as a file. Each side is its key and
    /// whether it is set.
    fn one_secret(
        &self,
        (inline_key, inline): (&str, bool),
        (file_key, file): (&str, bool),
        missing: &str,
    ) -> Result<(), ConfigError> {
        let name = |key: &str| key.rsplit('.').next().unwrap_or(key).to_owned();
        match (inline, file) {
            (true, true) => Err(self.key_error(
                inline_key,
                format!(
                    "set either {} or {}, not both",
                    name(inline_key),
                    name(file_key)
                ),
            )),
            (false, false) => Err(self.key_error(file_key, missing)),
            _ => Ok(()),
        }
    }

    /// `kind = "ldap"`: an ldap(s) URL, StartTLS only on ldap://, one password,
    /// DNs and filters that parse, a page size the servers accept.
    fn validate_ldap(&self) -> Result<(), ConfigError> {
        let DirectoryConfig::Ldap {
            url,
            start_tls,
            bind_dn,
            bind_password,
            bind_password_file,
            base_dn,
            group_base_dn,
            user_filter,
            group_filter,
            disabled_filter,
            id_attribute,
            user_name_attribute,
            page_size,
            timeout,
            allow_cleartext,
            flavor,
            ..
        } = &self.directory
        else {
            return Ok(());
        };
        let parsed = url::Url::parse(url)
            .map_err(|e| self.key_error("directory.url", not_a_url(url, "ldaps", e)))?;
        match parsed.scheme() {
            "ldaps" if *start_tls => {
                return Err(self.key_error(
                    "directory.start_tls",
                    "ldaps:// is TLS from the start; use start_tls only with ldap://",
                ));
            }
            "ldap" | "ldaps" => {}
            _ => {
                return Err(self.key_error("directory.url", "must be an ldap:// or ldaps:// URL"));
            }
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(self.key_error("directory.url", "names no host"));
        }
        self.refuse_credentials_in_url(
            "directory.url",
            &parsed,
            "directory.bind_dn and directory.bind_password_file (or directory.bind_password)",
        )?;
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
            return Err(self.key_error(
                "directory.url",
                "only scheme, host and port: set the search base with directory.base_dn",
            ));
        }
        // A Global Catalog answers like a domain controller but holds a partial
        // copy: expired leavers would read as active, and groups of other domains
        // as empty (their members out of scope, deprovisions planned).
        if *flavor == LdapFlavor::ActiveDirectory
            && let Some(port @ (3268 | 3269)) = parsed.port()
        {
            return Err(self.key_error(
                "directory.url",
                format!(
                    "port {port} is a Global Catalog, which holds no accountExpires and not the \
                     members of other domains' global and domain-local groups: point it at a \
                     domain controller (port 389, or 636 with ldaps://)"
                ),
            ));
        }
        if !*start_tls {
            self.refuse_cleartext(
                "directory.url",
                &parsed,
                "the bind password",
                "directory.allow_cleartext",
                *allow_cleartext,
            )?;
        }
        self.one_secret(
            ("directory.bind_password", bind_password.is_some()),
            ("directory.bind_password_file", bind_password_file.is_some()),
            "missing: the password of directory.bind_dn (a file, or bind_password)",
        )?;
        for (key, value) in [
            ("directory.bind_dn", Some(bind_dn)),
            ("directory.base_dn", Some(base_dn)),
            ("directory.group_base_dn", group_base_dn.as_ref()),
            ("directory.id_attribute", id_attribute.as_ref()),
            (
                "directory.user_name_attribute",
                user_name_attribute.as_ref(),
            ),
        ] {
            if value.is_some_and(|v| v.trim().is_empty()) {
                return Err(self.key_error(key, "must not be empty"));
            }
        }
        // A search base is a DN; a domain name there (the usual slip) is refused by
        // the server only at the first run, as invalidDNSyntax. A bind DN is not
        // checked: Active Directory also binds as `user@domain` and `DOMAIN\user`.
        for (key, value) in [
            ("directory.base_dn", Some(base_dn)),
            ("directory.group_base_dn", group_base_dn.as_ref()),
        ] {
            if let Some(value) = value
                && !value.contains('=')
            {
                return Err(self.key_error(key, not_a_dn(value)));
            }
        }
        for (key, filter) in [
            ("directory.user_filter", user_filter),
            ("directory.group_filter", group_filter),
            ("directory.disabled_filter", disabled_filter),
        ] {
            // Before the parse: it recurses a level per parenthesis.
            if let Some(depth) = filter
                .as_deref()
                .map(ldap_filter_depth)
                .filter(|depth| *depth > MAX_LDAP_FILTER_DEPTH)
            {
                return Err(self.key_error(
                    key,
                    format!(
                        "nests parentheses {depth} deep; an LDAP filter may nest at most \
                         {MAX_LDAP_FILTER_DEPTH} (a real one nests a handful: was it generated?)"
                    ),
                ));
            }
            if let Some(filter) = filter
                && ldap3::parse_filter(filter).is_err()
            {
                return Err(self.key_error(
                    key,
                    format!("{filter:?} is not an LDAP filter (RFC 4515), e.g. (objectClass=user)"),
                ));
            }
        }
        if *page_size == 0 || i32::try_from(*page_size).is_err() {
            let key = "directory.page_size";
            return Err(self.key_error(key, out_of_range(key, page_size, Some(true))));
        }
        parse_timeout(timeout).map_err(|e| self.key_error("directory.timeout", e))?;
        Ok(())
    }

    /// The configured directory source, as a reconcile reads it. Secrets stay files
    /// (or inline values) and are read by the connector at use, so a rotated
    /// credential is picked up.
    pub fn directory(&self) -> Directory {
        self.directory_checking_mappings(true)
    }

    /// The directory as the deprovisioning sweep reads it: the scope and protected
    /// groups are checked as for a reconcile (they decide who is a leaver and who is
    /// never touched), a mapping's group is not. A mapping group renamed or spelt in
    /// another case would plan grants away, which only a reconcile plans; it says
    /// nothing about who left, and must not keep leavers' access until someone
    /// fixes the configuration.
    pub fn sweep_directory(&self) -> Directory {
        self.directory_checking_mappings(false)
    }

    /// The directory as `check-config --connect` probes it: each request sent
    /// once (no retries) and bounded by `timeout` when the configured one is
    /// longer, so a probe answers in seconds, not after a run's minute of retries.
    pub fn probe_directory(&self, timeout: Duration) -> Directory {
        self.directory_with(
            true,
            RetryPolicy {
                max_retries: 0,
                ..RetryPolicy::default()
            },
            Some(timeout),
        )
    }

    fn directory_checking_mappings(&self, check_mappings: bool) -> Directory {
        self.directory_with(check_mappings, RetryPolicy::default(), None)
    }

    /// The directory with `retry` for its requests, and its timeouts at most
    /// `longest` when given.
    fn directory_with(
        &self,
        check_mappings: bool,
        retry: RetryPolicy,
        longest: Option<Duration>,
    ) -> Directory {
        let policy = self.policy_settings();
        let scope_groups = policy.scope_groups.clone();
        // Protected groups must be read like mapped ones: without their names on
        // the identities, their members would not be protected.
        let mut other_groups: Vec<String> = Vec::new();
        for group in policy
            .mappings
            .iter()
            .map(|m| &m.group)
            .chain(&self.safety.protected_groups)
        {
            if !scope_groups.contains(group) && !other_groups.contains(group) {
                other_groups.push(group.clone());
            }
        }
        let mut required_groups: Vec<RequiredGroup> = self
            .safety
            .protected_groups
            .iter()
            .map(|g| RequiredGroup::protected(g))
            .collect();
        required_groups.extend(
            self.policy
                .mapping
                .iter()
                .enumerate()
                .filter(|(_, m)| check_mappings && m.role == Role::Owner)
                .map(|(i, m)| RequiredGroup::owner_mapping(&m.group, i)),
        );
        let secret =
            |inline: &Option<SecretString>, file: &Option<PathBuf>, key: &'static str| match (
                inline, file,
            ) {
                (Some(value), _) => Secret::Inline(value.clone()),
                (None, Some(path)) => Secret::File {
                    key,
                    path: path.clone(),
                },
                (None, None) => Secret::Inline(SecretString::from(String::new())),
            };
        let timeout = |t: &str| {
            let configured = parse_duration(t).unwrap_or(Duration::from_secs(30));
            longest.map_or(configured, |longest| configured.min(longest))
        };
        match &self.directory {
            DirectoryConfig::File { path } => Directory::File(
                FileSource::new(path.clone())
                    .with_scope_groups(self.policy.scope_groups.clone())
                    .with_distinct_groups(self.safety.distinct_groups.clone())
                    .with_required_groups(
                        // Owner mappings are not required of an export: its rows
                        // only show a group through its members, and an Owner
                        // group emptied because its last members left must not
                        // stop their deprovisioning.
                        required_groups
                            .into_iter()
                            .filter(RequiredGroup::is_protected)
                            .collect(),
                    )
                    .with_mapping_groups(
                        self.policy
                            .mapping
                            .iter()
                            .enumerate()
                            .filter(|_| check_mappings)
                            .map(|(i, m)| (i, m.group.clone()))
                            .collect(),
                    ),
            ),
            DirectoryConfig::Okta {
                url,
                token,
                token_file,
                client_id,
                private_key_file,
                key_id,
                app_id,
                user_name_attribute,
                max_concurrency,
                timeout: t,
                allow_cleartext: _,
                ca_file,
            } => {
                let auth = match client_id {
                    Some(client_id) => OktaAuth::PrivateKeyJwt {
                        client_id: client_id.clone(),
                        key_id: key_id.clone(),
                        private_key: secret(&None, private_key_file, "directory.private_key_file"),
                    },
                    None => OktaAuth::Ssws(secret(token, token_file, "directory.token_file")),
                };
                Directory::Okta(OktaSource::new(OktaSettings {
                    url: url.clone(),
                    auth,
                    app_id: app_id.clone(),
                    scope_groups,
                    other_groups,
                    distinct_groups: self.safety.distinct_groups.clone(),
                    required_groups,
                    max_concurrency: *max_concurrency,
                    timeout: timeout(t),
                    retry,
                    overlap: Duration::from_secs(300),
                    user_name: *user_name_attribute,
                    ca_file: ca_file.clone(),
                }))
            }
            DirectoryConfig::Entra {
                tenant_id,
                client_id,
                client_secret,
                client_secret_file,
                certificate_file,
                private_key_file,
                app_id,
                graph_url,
                login_url,
                max_concurrency,
                requests_per_second,
                timeout: t,
                allow_cleartext: _,
                ca_file,
                include_guests,
                user_name_attribute,
            } => {
                let auth = match certificate_file {
                    Some(_) => EntraAuth::Certificate {
                        certificate: secret(&None, certificate_file, "directory.certificate_file"),
                        private_key: secret(&None, private_key_file, "directory.private_key_file"),
                    },
                    None => EntraAuth::ClientSecret(secret(
                        client_secret,
                        client_secret_file,
                        "directory.client_secret_file",
                    )),
                };
                Directory::Entra(EntraSource::new(EntraSettings {
                    tenant_id: tenant_id.clone(),
                    client_id: client_id.clone(),
                    auth,
                    app_id: app_id.clone(),
                    graph_url: graph_url.clone(),
                    login_url: login_url.clone(),
                    scope_groups,
                    other_groups,
                    distinct_groups: self.safety.distinct_groups.clone(),
                    required_groups,
                    max_concurrency: *max_concurrency,
                    requests_per_second: *requests_per_second,
                    timeout: timeout(t),
                    retry,
                    include_guests: *include_guests,
                    user_name: *user_name_attribute,
                    ca_file: ca_file.clone(),
                }))
            }
            DirectoryConfig::Ldap {
                url,
                start_tls,
                ca_file,
                bind_dn,
                bind_password,
                bind_password_file,
                base_dn,
                group_base_dn,
                flavor,
                user_filter,
                group_filter,
                disabled_filter,
                id_attribute,
                user_name_attribute,
                page_size,
                timeout: t,
                allow_cleartext: _,
            } => {
                let user_name_attribute = user_name_attribute
                    .clone()
                    .unwrap_or_else(|| flavor.default_user_name_attribute().to_owned());
                Directory::Ldap(LdapSource::new(LdapSettings {
                    url: url.clone(),
                    start_tls: *start_tls,
                    ca_file: ca_file.clone(),
                    bind_dn: bind_dn.clone(),
                    bind_password: secret(
                        bind_password,
                        bind_password_file,
                        "directory.bind_password_file",
                    ),
                    base_dn: base_dn.clone(),
                    group_base_dn: group_base_dn.clone().unwrap_or_else(|| base_dn.clone()),
                    flavor: *flavor,
                    user_filter: user_filter
                        .clone()
                        .unwrap_or_else(|| flavor.default_user_filter(&user_name_attribute)),
                    group_filter: group_filter
                        .clone()
                        .unwrap_or_else(|| flavor.default_group_filter().to_owned()),
                    disabled_filter: disabled_filter.clone(),
                    id_attribute: id_attribute
                        .clone()
                        .unwrap_or_else(|| flavor.default_id_attribute().to_owned()),
                    user_name_attribute,
                    page_size: *page_size,
                    scope_groups,
                    other_groups,
                    distinct_groups: self.safety.distinct_groups.clone(),
                    required_groups,
                    timeout: timeout(t),
                    retry,
                }))
            }
            DirectoryConfig::Scim {
                url,
                token,
                token_file,
                page_size,
                pagination,
                max_concurrency,
                requests_per_second,
                timeout: t,
                allow_cleartext: _,
                ca_file,
                missing_active,
            } => Directory::Scim(ScimDirectorySource::new(ScimDirectorySettings {
                url: url.clone(),
                token: secret(token, token_file, "directory.token_file"),
                page_size: *page_size,
                pagination: *pagination,
                max_concurrency: *max_concurrency,
                requests_per_second: *requests_per_second,
                timeout: timeout(t),
                retry,
                scope_groups,
                other_groups,
                distinct_groups: self.safety.distinct_groups.clone(),
                required_groups,
                ca_file: ca_file.clone(),
                missing_active: *missing_active,
            })),
        }
    }

    /// The workspace token, read from `token_file` when given. Read at use, not at
    /// load, so a rotated credential file is picked up by the next run.
    pub fn workspace_token(&self) -> Result<SecretString, ConfigError> {
        use secrecy::ExposeSecret;
        if let Some(token) = &self.workspace.token {
            if let Some(mistake) = token_mistake(token.expose_secret()) {
                return Err(self.key_error("workspace.token", mistake));
            }
            return Ok(token.clone());
        }
        let file = self.workspace.token_file.clone().unwrap_or_default();
        let text = std::fs::read_to_string(&file)
            .map_err(|source| self.secret_file_error("workspace.token_file", &file, source))?;
        let token = token_in_file(&text).ok_or_else(|| {
            self.key_error(
                "workspace.token_file",
                format!("{} is empty", file.display()),
            )
        })?;
        if let Some(mistake) = token_mistake(token) {
            return Err(self.key_error(
                "workspace.token_file",
                format!("{}: the token {mistake}", file.display()),
            ));
        }
        Ok(SecretString::from(token.to_owned()))
    }

    pub fn scim_settings(&self) -> Result<ScimSettings, ConfigError> {
        let base_url = url::Url::parse(&self.workspace.url).map_err(|e| {
            self.key_error("workspace.url", not_a_url(&self.workspace.url, "https", e))
        })?;
        let role_attribute = self.role_attribute()?;
        let timeout = parse_timeout(&self.workspace.timeout)
            .map_err(|e| self.key_error("workspace.timeout", e))?;
        Ok(ScimSettings {
            base_url,
            token: self.workspace_token()?,
            role_attribute,
            page_size: self.workspace.page_size,
            pagination: self.workspace.pagination,
            max_concurrency: self.workspace.max_concurrency,
            requests_per_second: self.workspace.requests_per_second,
            timeout,
            retry: self.workspace_retry()?,
            managed_groups: self
                .policy
                .mapping
                .iter()
                .map(|m| m.workspace_group.clone())
                .collect(),
            group_members: self.workspace.group_members,
            ca_pem: self.ca_pem("workspace.ca_file", self.workspace.ca_file.as_deref())?,
        })
    }

    /// `workspace.role_groups` lacks the group of a role that is given (by
    /// `wanted_by`, `policy.default_role`, or a mapping): the error names where
    /// the want came from. `workspace.role_attribute = "groups"` set by a
    /// variable while the file gives no role group is that variable's (the file
    /// has nothing to complete); else a default role set by a variable is its;
    /// else the role groups' origin.
    fn missing_role_group(&self, wanted_by: Option<&str>, message: String) -> ConfigError {
        let key = "workspace.role_groups";
        let file_gives_one = self
            .workspace
            .role_groups
            .keys()
            .any(|role| !self.from_env.contains(&format!("{key}.{role}")));
        let path = if self.from_env.contains("workspace.role_attribute") && !file_gives_one {
            self.origin_of("workspace.role_attribute")
        } else if let Some(wanted_by) = wanted_by.filter(|k| self.from_env.contains(*k)) {
            self.origin_of(wanted_by)
        } else {
            self.origin_of(key)
        };
        ConfigError::Key {
            path,
            key: key.to_owned(),
            message,
        }
    }

    /// `workspace.role_attribute`, with `workspace.role_groups` under `"groups"`,
    /// validated.
    pub fn role_attribute(&self) -> Result<RoleAttribute, ConfigError> {
        let attribute = RoleAttribute::parse(&self.workspace.role_attribute)
            .map_err(|e| self.key_error("workspace.role_attribute", e))?;
        if let RoleAttribute::Extension { schema, attribute } = &attribute {
            refuse_core_schema(schema, attribute)
                .map_err(|e| self.key_error("workspace.role_attribute", e))?;
        }
        let configured = &self.workspace.role_groups;
        if !matches!(attribute, RoleAttribute::Groups { .. }) {
            if configured.is_empty() {
                return Ok(attribute);
            }
            return Err(self.key_error(
                "workspace.role_groups",
                format!(
                    "only used with workspace.role_attribute = \"groups\" (it is {:?}): \
                     remove the table, or carry roles by group membership",
                    self.workspace.role_attribute
                ),
            ));
        }
        // A role's key from the environment overrides the file's, whatever case
        // the file spells it in.
        let mut chosen: Vec<(Role, &String, &String)> = Vec::with_capacity(configured.len());
        for (key, name) in configured {
            let key_name = format!("workspace.role_groups.{key}");
            let role: Role = key
                .parse()
                .map_err(|e: crate::model::UnknownRole| self.key_error(&key_name, e.to_string()))?;
            // Exactly: the environment's keys are lower case, and a file key in
            // lower case is the same key, overridden in place.
            let from_env = |key: &str| {
                self.from_env
                    .contains(&format!("workspace.role_groups.{key}"))
            };
            match chosen.iter_mut().find(|(r, _, _)| *r == role) {
                None => chosen.push((role, key, name)),
                Some(other) if from_env(key) && !from_env(other.1) => *other = (role, key, name),
                Some(other) if from_env(other.1) && !from_env(key) => {}
                Some(_) => {
                    return Err(
                        self.key_error(&key_name, format!("role {role} is given a group twice"))
                    );
                }
            }
        }
        let mut groups: Vec<(Role, String)> = Vec::with_capacity(chosen.len());
        for (role, key, name) in chosen {
            let key_name = format!("workspace.role_groups.{key}");
            let name = name.trim();
            if name.is_empty() {
                return Err(self.key_error(&key_name, "the group name is empty"));
            }
            self.refuse_hidden(&key_name, name)?;
            let folded = crate::policy::fold_group_name(name);
            for (other, other_name) in &groups {
                if crate::policy::fold_group_name(other_name) == folded {
                    return Err(self.key_error(
                        &key_name,
                        format!(
                            "{name:?} is also the group of role {other} \
                             (workspace.role_groups.{other}): one group can give one role"
                        ),
                    ));
                }
            }
            if let Some(index) = self
                .policy
                .mapping
                .iter()
                .position(|m| crate::policy::fold_group_name(&m.workspace_group) == folded)
            {
                return Err(self.key_error(
                    &key_name,
                    format!(
                        "{name:?} is also policy.mapping[{index}].workspace_group: a role group's \
                         members are the role's holders, which the mappings' group diff would \
                         add and remove as workspace access"
                    ),
                ));
            }
            if self
                .safety
                .protected_groups
                .iter()
                .any(|g| crate::policy::fold_group_name(g) == folded)
            {
                return Err(self.key_error(
                    &key_name,
                    format!(
                        "{name:?} is also in safety.protected_groups: the group that protects \
                         accounts from seatwarden cannot be one whose members seatwarden writes"
                    ),
                ));
            }
            groups.push((role, name.to_owned()));
        }
        let has_group = |role: Role| groups.iter().any(|(r, _)| *r == role);
        let default_role = self.policy.default_role;
        if !has_group(default_role) {
            return Err(self.missing_role_group(
                Some("policy.default_role"),
                format!(
                    "no group for role {default_role}, policy.default_role: with \
                     workspace.role_attribute = \"groups\" every role seatwarden gives needs \
                     its group (e.g. {default_role} = \"Taskade {default_role}s\")"
                ),
            ));
        }
        for (index, mapping) in self.policy.mapping.iter().enumerate() {
            if !has_group(mapping.role) {
                return Err(self.missing_role_group(
                    None,
                    format!(
                        "no group for role {}, which policy.mapping[{index}] gives: with \
                         workspace.role_attribute = \"groups\" every role seatwarden gives \
                         needs its group",
                        mapping.role
                    ),
                ));
            }
        }
        Ok(RoleAttribute::Groups { groups })
    }

    pub fn manages_roles(&self) -> bool {
        !matches!(
            RoleAttribute::parse(&self.workspace.role_attribute),
            Ok(RoleAttribute::None)
        )
    }

    pub fn policy_settings(&self) -> PolicySettings {
        PolicySettings {
            scope_groups: self.policy.scope_groups.clone(),
            default_role: self.policy.default_role,
            mappings: self
                .policy
                .mapping
                .iter()
                .map(|m| Mapping {
                    group: m.group.clone(),
                    workspace_group: m.workspace_group.clone(),
                    role: m.role,
                })
                .collect(),
            manage_roles: self.manages_roles(),
        }
    }

    /// How long a deprovisioned person's account stays deactivated before it is
    /// deleted: `None` with `deprovision.action = "deactivate"` (never deleted),
    /// zero for "at once". Validated at load; a value that does not parse (a
    /// configuration built without loading) means "not within a century", never
    /// "at once".
    pub fn delete_after(&self) -> Option<Duration> {
        match self.deprovision.action {
            DeprovisionAction::Deactivate => None,
            DeprovisionAction::Delete => Some(
                self.deprovision
                    .delete_after
                    .as_deref()
                    .and_then(|text| parse_duration(text).ok())
                    .unwrap_or(MAX_DURATION),
            ),
        }
    }

    /// The plan settings from the configuration alone: deactivated accounts'
    /// retention clocks are the store's, filled in by the run.
    /// The `[[safety.exceptions]]`, their ends resolved on the clock of
    /// `report.timezone`; an error names the entry's key.
    pub fn exceptions(&self) -> Result<Vec<Exception>, ConfigError> {
        if self.safety.exceptions.is_empty() {
            return Ok(Vec::new());
        }
        let tz = self.report_timezone()?;
        let mut parsed: Vec<Exception> = Vec::with_capacity(self.safety.exceptions.len());
        for (index, entry) in self.safety.exceptions.iter().enumerate() {
            let key = |field: &str| format!("safety.exceptions[{index}].{field}");
            let user_name = entry.user_name.trim();
            if user_name.is_empty() {
                return Err(self.key_error(&key("user_name"), "is empty"));
            }
            if user_name.contains(['*', '?']) {
                return Err(self.key_error(
                    &key("user_name"),
                    format!(
                        "{user_name:?}: an exception names one account exactly; a pattern \
                         that keeps accounts for good belongs in safety.protected"
                    ),
                ));
            }
            if entry.reason.trim().is_empty() {
                return Err(self.key_error(
                    &key("reason"),
                    "is empty: say why the account is kept (a ticket, who approved it); \
                     reports and the ledger show it",
                ));
            }
            let until =
                parse_until(&entry.until, tz).map_err(|e| self.key_error(&key("until"), e))?;
            if until > latest_exception_end(tz) {
                return Err(self.key_error(
                    &key("until"),
                    format!(
                        "{:?} ends after 9000-01-01 on the clock of {tz}: the ledger keeps an exception's end, and \
                         its due time an SLA later, as times of 4-digit years; an account kept \
                         for good belongs in safety.protected",
                        entry.until.trim()
                    ),
                ));
            }
            let folded = crate::policy::fold_user_name(user_name);
            if let Some(earlier) = parsed
                .iter()
                .position(|e| crate::policy::fold_user_name(&e.user_name) == folded)
            {
                return Err(self.key_error(
                    &key("user_name"),
                    format!(
                        "{user_name:?} is safety.exceptions[{earlier}]'s too: one exception per \
                         account (change the earlier entry's until and reason)"
                    ),
                ));
            }
            parsed.push(Exception {
                user_name: user_name.to_owned(),
                until,
                reason: entry.reason.trim().to_owned(),
            });
        }
        Ok(parsed)
    }

    /// The plan settings at `now`: the exceptions not ended by then protect
    /// their accounts.
    pub fn plan_settings(&self, now: chrono::DateTime<chrono::Utc>) -> PlanSettings {
        PlanSettings {
            deprovision: self.deprovision.action,
            retention: crate::plan::Retention {
                delete_after: self.delete_after().map_or(chrono::TimeDelta::zero(), |d| {
                    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
                }),
                ..Default::default()
            },
            unmatched_accounts: self.policy.unmatched_accounts,
            manage_roles: self.manages_roles(),
            // Validated at load: an error here cannot happen.
            protected: Protected::new(&self.safety.protected)
                .with_exceptions(&self.exceptions().unwrap_or_default(), now),
            admin_command: self.admin_command(),
        }
    }

    pub fn guard_settings(&self) -> GuardSettings {
        let s = &self.safety;
        GuardSettings {
            max_deprovisions: s.max_deprovisions,
            max_deprovision_percent: s.max_deprovision_percent,
            min_population_for_percent: s.min_population_for_percent,
            max_deprovisions_per_day: s.max_deprovisions_per_day,
            max_deprovision_percent_per_day: s.max_deprovision_percent_per_day,
            max_membership_removals: s.max_membership_removals,
            max_membership_removal_percent: s.max_membership_removal_percent,
            max_membership_removals_per_day: s.max_membership_removals_per_day,
            max_membership_removal_percent_per_day: s.max_membership_removal_percent_per_day,
            max_role_downgrades: s.max_role_downgrades,
            max_role_downgrade_percent: s.max_role_downgrade_percent,
            max_role_downgrades_per_day: s.max_role_downgrades_per_day,
            max_role_downgrade_percent_per_day: s.max_role_downgrade_percent_per_day,
            max_deletions: s.max_deletions,
            max_deletion_percent: s.max_deletion_percent,
            max_deletions_per_day: s.max_deletions_per_day,
            max_deletion_percent_per_day: s.max_deletion_percent_per_day,
            max_renames: s.max_renames,
            max_rename_percent: s.max_rename_percent,
            max_renames_per_day: s.max_renames_per_day,
            max_rename_percent_per_day: s.max_rename_percent_per_day,
            owner_mapped: self.policy.mapping.iter().any(|m| m.role == Role::Owner),
            granted_to_nobody: std::collections::BTreeSet::new(),
        }
    }

    /// `safety.settle` (validated at load; zero if it could not be parsed).
    pub fn settle(&self) -> Duration {
        parse_duration(&self.safety.settle).unwrap_or_default()
    }

    /// `[safety.circuit]` as the breaker takes it.
    pub fn circuit_settings(&self) -> crate::circuit::CircuitSettings {
        crate::circuit::CircuitSettings {
            failure_ratio: self.safety.circuit.failure_ratio,
            window: self.safety.circuit.window,
            cool_down: parse_duration(&self.safety.circuit.cool_down).unwrap_or_default(),
        }
    }

    /// The daemon's schedule, SLA and listener, each checked (errors name the key).
    pub fn daemon_settings(&self) -> Result<DaemonSettings, ConfigError> {
        let cron = |key: &str, pattern: &str| {
            Schedule::parse(pattern).map_err(|e| self.key_error(key, e.to_string()))
        };
        let timezone = parse_time_zone(&self.schedule.timezone)
            .map_err(|e| self.key_error("schedule.timezone", e))?;
        // Checked either way; without `[report.email]` there is nowhere to send it,
        // so the daemon does not schedule it (nor does `status` list its next fire).
        let digest = match self.schedule.digest.trim() {
            "" => None,
            pattern => Some(cron("schedule.digest", pattern)?),
        }
        .filter(|_| self.report.email.is_some());
        let positive = |key: &str, text: &str| {
            parse_duration(text)
                .map_err(|e| self.key_error(key, e))
                .and_then(|d| {
                    if d.is_zero() {
                        Err(self.key_error(key, "must be longer than zero"))
                    } else {
                        Ok(d)
                    }
                })
        };
        Ok(DaemonSettings {
            timezone,
            reconcile: cron("schedule.reconcile", &self.schedule.reconcile)?,
            sweep: cron("schedule.sweep", &self.schedule.sweep)?,
            digest,
            retention: parse_at_least(
                &self.schedule.retention,
                MIN_RETENTION,
                "1d",
                "the rolling 24 h safety limits count the actions of the runs still stored",
            )
            .map_err(|e| self.key_error("schedule.retention", e))?,
            reconcile_max_duration: match self.schedule.reconcile_max_duration.trim() {
                "" => None,
                text => Some(positive("schedule.reconcile_max_duration", text)?),
            },
            dry_run: self.schedule.dry_run,
            sla: positive("deprovision.sla", &self.deprovision.sla)?,
            listen: self.http.listen.parse().map_err(|_| {
                self.key_error(
                    "http.listen",
                    format!(
                        "{:?} is not an address:port such as 127.0.0.1:9464",
                        self.http.listen
                    ),
                )
            })?,
        })
    }

    /// The `POST /reconcile` bearer token, when `http.trigger_token_file` is set.
    pub fn trigger_token(&self) -> Result<Option<SecretString>, ConfigError> {
        let Some(file) = &self.http.trigger_token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(file)
            .map_err(|source| self.secret_file_error("http.trigger_token_file", file, source))?;
        let token = token_in_file(&text).ok_or_else(|| {
            self.key_error(
                "http.trigger_token_file",
                format!("{} is empty", file.display()),
            )
        })?;
        Ok(Some(SecretString::from(token.to_owned())))
    }

    /// The effective configuration as TOML, secrets redacted. No role groups
    /// (`workspace.role_attribute` is not `groups`) print no empty
    /// `[workspace.role_groups]` table, which would read as one left to fill in.
    pub fn to_redacted_toml(&self) -> String {
        // `safety.distinct_groups` entries differ from configured groups only in
        // characters that do not show: printed as they are, "IT\u00A0Admins"
        // read as the protected "IT Admins" itself. Each entry holding one is
        // rendered through a placeholder and written back escaped.
        let spelled_out: Vec<(String, String)> = self
            .safety
            .distinct_groups
            .iter()
            .enumerate()
            .filter(|(_, name)| name.chars().any(crate::names::is_hidden))
            .map(|(index, name)| {
                (
                    format!("\"seatwarden-distinct-group-{index}\""),
                    toml_basic_string_escaped(name),
                )
            })
            .collect();
        let rendered = toml::Table::try_from(self).map(|mut table| {
            if let Some(toml::Value::Array(distinct)) = table
                .get_mut("safety")
                .and_then(|safety| safety.get_mut("distinct_groups"))
            {
                for (index, entry) in distinct.iter_mut().enumerate() {
                    if entry
                        .as_str()
                        .is_some_and(|name| name.chars().any(crate::names::is_hidden))
                    {
                        *entry = toml::Value::String(format!("seatwarden-distinct-group-{index}"));
                    }
                }
            }
            if let Some(toml::Value::Table(workspace)) = table.get_mut("workspace")
                && workspace
                    .get("role_groups")
                    .and_then(toml::Value::as_table)
                    .is_some_and(toml::Table::is_empty)
            {
                workspace.remove("role_groups");
            }
            // Unset, these keys print as an empty `[report]`: what they come to is
            // shown instead, as for every other key with a default.
            if let toml::Value::Table(report) = table
                .entry("report")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            {
                let timezone = self
                    .report
                    .timezone
                    .clone()
                    .unwrap_or_else(|| self.schedule.timezone.clone());
                for (key, value) in [
                    ("name", self.report_name()),
                    ("timezone", timezone),
                    ("admin_command", self.admin_command()),
                ] {
                    report
                        .entry(key)
                        .or_insert_with(|| toml::Value::String(value));
                }
            }
            toml::to_string_pretty(&table)
        });
        match rendered {
            Ok(Ok(mut text)) => {
                for (placeholder, escaped) in &spelled_out {
                    text = text.replace(placeholder, escaped);
                }
                text
            }
            Ok(Err(e)) => format!("# cannot render: {e}\n"),
            Err(e) => format!("# cannot render: {e}\n"),
        }
    }
}

/// `value` as a TOML basic string (quotes included) with every character that
/// does not show ([`crate::names::is_hidden`]) written as its `\uXXXX` escape,
/// so that what sets it apart can be read, and read back the same.
fn toml_basic_string_escaped(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if crate::names::is_hidden(c) => match u16::try_from(u32::from(c)) {
                Ok(unit) => out.push_str(&format!("\\u{unit:04X}")),
                Err(_) => out.push_str(&format!("\\U{:08X}", u32::from(c))),
            },
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Every key (dotted, with `[i]` for the items of an array) whose value in `file`
/// is not of the type `loaded` holds for it, with what is wrong, in key order.
fn mistyped_values(
    file: &toml::Table,
    loaded: &toml::Table,
    prefix: &str,
    mistyped: &mut Vec<(String, String)>,
) {
    use toml::Value;
    for (key, value) in file {
        let Some(expected) = loaded.get(key) else {
            continue;
        };
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (value, expected) {
            (Value::Table(file), Value::Table(loaded)) => {
                mistyped_values(file, loaded, &name, mistyped);
            }
            (Value::Array(file), Value::Array(loaded)) => {
                for (i, pair) in file.iter().zip(loaded).enumerate() {
                    let item = format!("{name}[{i}]");
                    match pair {
                        (Value::Table(file), Value::Table(loaded)) => {
                            mistyped_values(file, loaded, &item, mistyped);
                        }
                        (value, expected) => {
                            if let Some(message) = value_for_type(value, expected) {
                                mistyped.push((item, message));
                            }
                        }
                    }
                }
            }
            (value, expected) => {
                if let Some(message) = value_for_type(value, expected) {
                    mistyped.push((name, message));
                }
            }
        }
    }
}

/// What is wrong with `value`, from the file, for a key whose loaded value is
/// `expected`; `None` when it is of the right type. A whole number for a
/// fraction (`max_deprovision_percent = 5`) and a whole fraction for a whole
/// number (`4.0`) are right; a number or boolean where text belongs is left to
/// the key's own parsing (a password of digits is text).
fn value_for_type(value: &toml::Value, expected: &toml::Value) -> Option<String> {
    use toml::Value;
    let found = match value {
        Value::String(text) => format!("the text {text:?}"),
        Value::Integer(n) => format!("the number {n}"),
        Value::Float(f) => format!("the number {f}"),
        Value::Boolean(b) => format!("{b}"),
        _ => return None,
    };
    match (value, expected) {
        (Value::Float(fraction), Value::Integer(_)) if fraction.fract() != 0.0 => Some(format!(
            "{fraction} is not a whole number (it would be rounded)"
        )),
        (Value::Integer(_) | Value::Float(_), Value::Integer(_) | Value::Float(_))
        | (Value::Boolean(_), Value::Boolean(_)) => None,
        (Value::String(text), Value::Integer(_) | Value::Float(_) | Value::Boolean(_)) => {
            let unquoted = text_for_type(text, expected).is_none();
            Some(format!(
                "expected {}, found {found} ({})",
                type_name(expected),
                if unquoted {
                    "write it without quotes".to_owned()
                } else {
                    format!("write {} without quotes", type_example(expected))
                }
            ))
        }
        (_, Value::Integer(_) | Value::Float(_) | Value::Boolean(_)) => Some(format!(
            "expected {}, found {found} (write {})",
            type_name(expected),
            type_example(expected)
        )),
        _ => None,
    }
}

/// What is wrong with `text`, a variable's value, for a key whose loaded value is
/// `expected`; `None` when it reads as that type.
fn text_for_type(text: &str, expected: &toml::Value) -> Option<String> {
    use toml::Value;
    let trimmed = text.trim();
    let reads = match expected {
        Value::Boolean(_) => matches!(trimmed.to_ascii_lowercase().as_str(), "true" | "false"),
        Value::Integer(_) => trimmed.parse::<i64>().is_ok(),
        Value::Float(_) => trimmed.parse::<f64>().is_ok_and(f64::is_finite),
        _ => true,
    };
    (!reads).then(|| {
        format!(
            "expected {}, found {text:?} (write {})",
            type_name(expected),
            type_example(expected)
        )
    })
}

fn type_name(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::Boolean(_) => "true or false",
        toml::Value::Integer(_) => "a whole number",
        _ => "a number",
    }
}

fn type_example(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::Boolean(_) => "true or false",
        toml::Value::Integer(_) => "digits, e.g. 100",
        _ => "a number, e.g. 2.5",
    }
}

/// A variable that starts with `SEATWARDEN_` (in any case) but is neither a
/// `SEATWARDEN__…` override nor one of the binary's [`OWN_VARIABLES`]: it is
/// not read, and whoever set it believes it is.
fn is_unread_variable(name: &str) -> bool {
    let upper = name.to_uppercase();
    upper.starts_with(&format!("{ENV_PREFIX}_"))
        && !name.starts_with(&format!("{ENV_PREFIX}__"))
        && !OWN_VARIABLES.contains(&name)
        && !TOOL_VARIABLES.contains(&name)
}

/// `STATE_PATH` split at the tables of `table` it names: `STATE__PATH`,
/// `REPORT__EMAIL__TO`; `None` when it starts with no table's name.
fn sections_split(table: &toml::Table, rest: &str) -> Option<String> {
    let (section, inner) = table
        .iter()
        .filter_map(|(key, value)| {
            let after = rest.strip_prefix(&key.to_uppercase())?.strip_prefix('_')?;
            Some((key, value.as_table()?, after))
        })
        .max_by_key(|(key, ..)| key.len())
        .map(|(key, inner, after)| (format!("{}__", key.to_uppercase()), (inner, after)))?;
    let (inner, after) = inner;
    Some(match sections_split(inner, after) {
        Some(deeper) => format!("{section}{deeper}"),
        None => format!("{section}{after}"),
    })
}

/// Whether `text` names the dotted `key` whole: `directory.token_file` names
/// `directory.token_file`, not `directory.token`; a full stop may end it.
fn names_key(text: &str, key: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(key).any(|(at, _)| {
        let mut after = text[at + key.len()..].chars();
        let joined_after = match after.next() {
            Some('.') => after.next().is_some_and(word),
            next => next.is_some_and(word),
        };
        let joined_before = text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| word(c) || c == '.');
        !joined_before && !joined_after
    })
}

/// The dotted key a `SEATWARDEN__SECTION__KEY` variable sets (`section.key`).
fn key_of_variable(name: &str) -> String {
    name.strip_prefix(&format!("{ENV_PREFIX}__"))
        .unwrap_or(name)
        .split("__")
        .collect::<Vec<_>>()
        .join(".")
        .to_lowercase()
}

/// The key a variable set that made `key`'s table, when `file` has no such
/// table: `workspace.role_groups` that `SEATWARDEN__WORKSPACE__ROLE_GROUPS__OWNER`
/// made, or the `[report.email]` that `SEATWARDEN__REPORT__EMAIL__TO` made and
/// that misses its `from`. Blamed on the file, the error would send people to
/// look in it for a table it does not have. `set` holds the keys the variables
/// set (`report.email.to`). Reads the file again: only for an error.
fn table_made_by_a_variable<'a>(
    key: &str,
    file: &Path,
    set: impl IntoIterator<Item = &'a String> + Clone,
) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let file = toml::from_str::<toml::Table>(&text).ok()?;
    let mut table = Some(key);
    while let Some(at) = table {
        if value_at(&file, at).is_some() {
            return None;
        }
        let under = format!("{at}.");
        if let Some(variable) = set.clone().into_iter().find(|set| set.starts_with(&under)) {
            return Some(variable.clone());
        }
        table = at.rsplit_once('.').map(|(parent, _)| parent);
    }
    None
}

/// A required key missing from a table only variables made (see
/// [`table_made_by_a_variable`]): the error names the variable, not the file.
fn blame_the_table_maker(error: ConfigError, file: &Path, variables: &[String]) -> ConfigError {
    match error {
        ConfigError::Key { path, key, message }
            if path == file && message.starts_with("missing") =>
        {
            // Sorted: the same variable is named whatever order the environment lists them in.
            let set: std::collections::BTreeSet<String> =
                variables.iter().map(|name| key_of_variable(name)).collect();
            let path = match table_made_by_a_variable(&key, file, &set) {
                Some(variable) => {
                    value_source(file, Some("the environment".to_owned()), Some(&variable))
                }
                None => path,
            };
            ConfigError::Key { path, key, message }
        }
        other => other,
    }
}

/// The file with the `SEATWARDEN__…` variables of `env` over it, as the `config`
/// crate reads them, and those variables that are no list (their text is checked
/// against the type of their key once loaded).
fn layered(
    path: &Path,
    mut env: std::collections::HashMap<String, String>,
) -> Result<(config::Config, Vec<(String, String)>), ConfigError> {
    // Values stay text (no `try_parsing`): parsed, `0123456` would become the
    // number 123456 and a secret `true` a boolean, handed back as other text.
    // Numbers and booleans are read from text where a key wants them. Lists
    // are split here, as only `try_parsing` would split them.
    let mut builder = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml));
    let mut lists: Vec<(String, String)> = env
        .keys()
        .filter(|name| ENV_LIST_KEYS.contains(&key_of_variable(name).as_str()))
        .cloned()
        .collect::<Vec<_>>()
        .into_iter()
        .filter_map(|name| Some((key_of_variable(&name), env.remove(&name)?)))
        .collect();
    lists.sort();
    let mut scalars: Vec<(String, String)> = env.clone().into_iter().collect();
    scalars.sort();
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .source(Some(env)),
    );
    for (key, value) in lists {
        let items: Vec<String> = value.split(',').map(str::to_owned).collect();
        builder = builder
            .set_override(key.as_str(), items)
            .map_err(|e| describe_config_error(path, e))?;
    }
    let raw = builder
        .build()
        .map_err(|e| describe_config_error(path, e))?;
    Ok((raw, scalars))
}

/// An unknown key a `SEATWARDEN__…` variable set, where one or two `_` of its
/// name spelt as `__` name a key that is there (`SEATWARDEN__WORKSPACE_URL` for
/// `SEATWARDEN__WORKSPACE__URL`, `SEATWARDEN__REPORT_EMAIL_FROM` for
/// `SEATWARDEN__REPORT__EMAIL__FROM`): the error says which variable was meant. Each
/// such spelling is tried by loading the configuration with it instead, so a key
/// is "there" exactly when the configuration takes it.
fn suggest_the_spelling(
    error: ConfigError,
    file: &Path,
    env: &std::collections::HashMap<String, String>,
) -> ConfigError {
    let ConfigError::Key { path, key, message } = &error else {
        return error;
    };
    let Some(name) = path
        .to_str()
        .and_then(|origin| origin.strip_prefix("environment variable "))
    else {
        return error;
    };
    let Some(value) = env.get(name) else {
        return error;
    };
    if !message.contains("unknown field `") {
        return error;
    }
    let prefix = format!("{ENV_PREFIX}__");
    let Some(rest) = name.strip_prefix(&prefix) else {
        return error;
    };
    let bytes = rest.as_bytes();
    // Each lone `_`, between two other characters.
    let lone: Vec<usize> = (0..bytes.len())
        .filter(|&i| {
            i > 0
                && bytes[i] == b'_'
                && bytes[i - 1] != b'_'
                && bytes.get(i + 1).is_some_and(|&next| next != b'_')
        })
        .collect();
    let doubled = |at: &[usize]| {
        let mut spelt = prefix.clone();
        let mut from = 0;
        for &i in at {
            spelt.push_str(&rest[from..i]);
            spelt.push('_');
            from = i;
        }
        spelt.push_str(&rest[from..]);
        spelt
    };
    // One level missed (`WORKSPACE_URL`), then two (`REPORT_EMAIL_SMTP_URL`
    // for `REPORT__EMAIL__SMTP_URL`).
    let singles = lone.iter().map(|&i| doubled(&[i]));
    let pairs = lone.iter().enumerate().flat_map(|(n, &i)| {
        lone.iter()
            .skip(n + 1)
            .map(move |&j| [i, j])
            .collect::<Vec<_>>()
    });
    let meant = singles
        .chain(pairs.map(|at| doubled(&at)))
        .find(|candidate| {
            let wanted = key_of_variable(candidate);
            if wanted == "policy.mapping" || wanted.starts_with("policy.mapping.") {
                return false;
            }
            let mut env = env.clone();
            env.remove(name);
            env.insert(candidate.clone(), value.clone());
            let Ok((raw, _)) = layered(file, env) else {
                return false;
            };
            match raw.try_deserialize::<Config>() {
                Ok(_) => true,
                Err(e) => {
                    let error = describe_config_error(file, e);
                    // `STATE__PATH__X` makes the text `state.path` a table:
                    // refused at `state.path`, so no `x` is there.
                    let at_a_parent = matches!(&error, ConfigError::Key { key, .. }
                        if wanted.starts_with(&format!("{key}.")));
                    !at_a_parent && !names_unknown_key(&error, &wanted)
                }
            }
        });
    match meant {
        Some(meant) => ConfigError::Key {
            path: path.clone(),
            key: key.clone(),
            message: format!(
                "{message}; an override is spelt {ENV_PREFIX}__SECTION__KEY, with two \
                 underscores between the levels: did you mean {meant}?"
            ),
        },
        None => error,
    }
}

/// Whether `error` refuses `key` (`workspace.url`), or a table on its way
/// (`workspace_token` of `workspace_token.file`), as an unknown field.
fn names_unknown_key(error: &ConfigError, key: &str) -> bool {
    let (ConfigError::Key { message, .. } | ConfigError::Invalid { message, .. }) = error else {
        return false;
    };
    let Some(field) = message
        .split_once("unknown field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(field, _)| field.to_lowercase())
    else {
        return false;
    };
    let unknown = match error {
        ConfigError::Key { key, .. } => key.to_lowercase(),
        _ => field,
    };
    unknown == key
        || key.starts_with(&format!("{unknown}."))
        || unknown.starts_with(&format!("{key}."))
}

/// Every key the file at `path` writes (`safety`, `safety.max_deprovisions`),
/// as [`Config::from_file`] keeps them; none when it no longer reads or parses
/// (the `config` crate read it a moment ago: it changed in between).
fn keys_written_in(path: &Path) -> std::collections::BTreeSet<String> {
    fn collect(table: &toml::Table, prefix: &str, keys: &mut std::collections::BTreeSet<String>) {
        for (name, value) in table {
            let key = match prefix {
                "" => name.clone(),
                prefix => format!("{prefix}.{name}"),
            };
            if let toml::Value::Table(inner) = value {
                collect(inner, &key, keys);
            }
            keys.insert(key);
        }
    }
    let mut keys = std::collections::BTreeSet::new();
    if let Some(table) = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| toml::from_str::<toml::Table>(&text).ok())
    {
        collect(&table, "", &mut keys);
    }
    keys
}

/// The value at a dotted key (`report.email.allow_cleartext`) of a table.
fn value_at<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let mut parts = key.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    Some(value)
}

/// Turns the `config` crate's errors into ones that name the file and the key.
/// A value that came from the environment names the variable instead of the file.
/// Where a value came from: the file or an environment variable.
fn value_source(path: &Path, origin: Option<String>, key: Option<&str>) -> PathBuf {
    match origin.filter(|o| !o.is_empty()) {
        Some(o) if o == "the environment" => PathBuf::from(match key {
            Some(key) => format!(
                "environment variable {ENV_PREFIX}__{}",
                key.replace('.', "__").to_uppercase()
            ),
            None => "the environment".to_owned(),
        }),
        // The file's own values: the `config` crate records the file as it
        // opened it, relative to the working directory when under it, where every
        // other error names the path given (`--config`).
        Some(_) | None => path.to_owned(),
    }
}

/// serde names no origin for a value it refuses (`default_role = "owner"`, an
/// enum's unknown variant), so it is blamed on the file. A `SEATWARDEN__…`
/// variable setting that very key overrides the file, so the refused value is the
/// variable's: the error names the variable instead.
fn blame_the_override(error: ConfigError, file: &Path, variables: &[String]) -> ConfigError {
    let ConfigError::Key { path, key, message } = &error else {
        return error;
    };
    // `policy.mapping[0].role` is no variable's: the mappings are the file's alone.
    // An unknown key is `blame_the_variable`'s: the file and a variable may both
    // hold it.
    if path != file || key.contains('[') || message.contains("unknown field `") {
        return error;
    }
    let wanted = key.to_lowercase();
    let prefix = format!("{ENV_PREFIX}__");
    let culprit = variables.iter().find(|name| {
        name.strip_prefix(&prefix).is_some_and(|rest| {
            rest.split("__")
                .collect::<Vec<_>>()
                .join(".")
                .to_lowercase()
                == wanted
        })
    });
    match culprit {
        Some(name) => ConfigError::Key {
            path: PathBuf::from(format!("environment variable {name}")),
            key: key.clone(),
            message: message.clone(),
        },
        None => error,
    }
}

/// serde names no origin for an unknown field, so it is blamed on the file; when
/// the file does not have that key (in its section) but a `SEATWARDEN__…` variable
/// spells it — a typo in the variable, one `_` for `__`, or a key set in the wrong
/// section — the error names that variable instead.
fn blame_the_variable(error: ConfigError, file: &Path, variables: &[String]) -> ConfigError {
    let (ConfigError::Key { path, message, .. } | ConfigError::Invalid { path, message }) = &error
    else {
        return error;
    };
    let Some(field) = message
        .split_once("unknown field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(field, _)| field.to_owned())
    else {
        return error;
    };
    if path != file {
        return error;
    }
    // The whole path of the unknown key: `safety.page_size`, or `safty` itself.
    let key = match &error {
        ConfigError::Key { key, .. } => key.to_lowercase(),
        _ => field.to_lowercase(),
    };
    let in_file = config::Config::builder()
        .add_source(config::File::from(file).format(config::FileFormat::Toml))
        .build()
        .is_ok_and(|parsed| parsed.get::<config::Value>(&key).is_ok());
    if in_file {
        return error;
    }
    let prefix = format!("{ENV_PREFIX}__");
    let culprit = variables.iter().find(|name| {
        name.strip_prefix(&prefix).is_some_and(|rest| {
            let dotted = rest
                .split("__")
                .collect::<Vec<_>>()
                .join(".")
                .to_lowercase();
            dotted == key
                || dotted.starts_with(&format!("{key}."))
                || dotted.rsplit('.').next() == Some(field.to_lowercase().as_str())
        })
    });
    match culprit {
        // Named as every other key error is, as the variable spells the key.
        Some(name) => ConfigError::Key {
            path: PathBuf::from(format!("environment variable {name}")),
            key: key_of_variable(name),
            message: message.clone(),
        },
        None => error,
    }
}

fn describe_config_error(path: &Path, error: config::ConfigError) -> ConfigError {
    let source = |origin: Option<String>, key: Option<&str>| value_source(path, origin, key);
    match error {
        config::ConfigError::Type {
            origin,
            unexpected,
            expected,
            key,
        } => ConfigError::Key {
            path: source(origin, key.as_deref()),
            key: key.map_or_else(|| "?".into(), |k| full_key(&k, "")),
            message: format!("invalid type: {unexpected}, expected {expected}"),
        },
        config::ConfigError::At { error, origin, key } => {
            let path = source(origin, key.as_deref());
            match key {
                Some(key) => {
                    let message = name_the_choices(error.to_string());
                    ConfigError::Key {
                        path,
                        key: full_key(&key, &message),
                        message,
                    }
                }
                None => ConfigError::Invalid {
                    path,
                    message: error.to_string(),
                },
            }
        }
        other => {
            // A syntax error ends with a line "in <file>" (a path relative to the
            // working directory), which the error already begins with.
            let message = other.to_string();
            let message = match message.rsplit_once("\n in ") {
                Some((excerpt, file)) if !file.contains('\n') => excerpt.trim_end().to_owned(),
                _ => message,
            };
            ConfigError::Invalid {
                path: path.to_owned(),
                message: without_secret_lines(&message),
            }
        }
    }
}

/// The keys whose values are secrets when given inline.
const SECRET_KEYS: [&str; 4] = ["token", "password", "client_secret", "bind_password"];

/// A TOML syntax error's message with the file's line it quotes (`7 | token =
/// "s3cr…`) shown only where it cannot hold a secret: the error goes to the
/// terminal, the journal and the daemon's reload log, and a line that fails to
/// parse is often the one being edited, a token or password half pasted. A line
/// that names a secret key (`token`, not `token_file`), even in a comment, keeps
/// its key and loses its value; a line that is neither a key, a table header nor
/// a comment (the inside of a string over several lines) is not shown. The
/// line and column, and what is wrong, stay.
fn without_secret_lines(message: &str) -> String {
    message
        .lines()
        .map(|line| {
            let Some((gutter, text)) = line.split_once('|') else {
                return line.to_owned();
            };
            let number = gutter.trim();
            if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                return line.to_owned();
            }
            let names_secret = text
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .any(|word| SECRET_KEYS.iter().any(|key| word.eq_ignore_ascii_case(key)));
            let trimmed = text.trim_start();
            // `key = …`: what is left of the first `=` reads as a key (bare or
            // quoted, dotted), not as the inside of a string (`AbC+/dEf==`).
            let assigns = text.split_once('=').is_some_and(|(key, _)| {
                key.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | '\'' | ' ')
                })
            });
            let plain = trimmed.is_empty()
                || trimmed.starts_with('#')
                || trimmed.starts_with('[')
                || assigns;
            match (names_secret, text.split_once('=')) {
                (false, _) if plain => line.to_owned(),
                (_, Some((key, _))) if assigns => format!("{gutter}|{key}= [redacted]"),
                _ => format!("{gutter}| [redacted]"),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The key an error is about, spelled as in the file: the `config` crate joins a
/// list item's field without a dot (`policy.mapping[0]role`), and names the table,
/// not the field, of an unknown field (`policy` for `policy.scope_group`).
fn full_key(key: &str, message: &str) -> String {
    let mut key = key.replace("]", "].").replace("].[", "][");
    if key.ends_with('.') {
        key.pop();
    }
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next());
    match unknown {
        Some(field) if !key.ends_with(&format!(".{field}")) && key != field => {
            format!("{key}.{field}")
        }
        _ => key,
    }
}

/// The `config` crate refuses a value that is none of an enum's as "enum Role
/// does not have variant constructor Admin", which does not say what would do:
/// that message becomes "`Admin` is not one of `Owner`, …".
fn name_the_choices(message: String) -> String {
    fn names<T: Serialize>(all: &[T]) -> Vec<String> {
        all.iter()
            .filter_map(|v| serde_json::to_value(v).ok()?.as_str().map(str::to_owned))
            .collect()
    }
    let Some((name, value)) = message
        .strip_prefix("enum ")
        .and_then(|rest| rest.split_once(" does not have variant constructor "))
    else {
        return message;
    };
    let choices = match name {
        // Highest first, as the design brief orders them.
        "Role" => names(&Role::ALL).into_iter().rev().collect(),
        "UnmatchedAccounts" => names(&[
            UnmatchedAccounts::Report,
            UnmatchedAccounts::Adopt,
            UnmatchedAccounts::Deactivate,
        ]),
        "DeprovisionAction" => names(&[DeprovisionAction::Deactivate, DeprovisionAction::Delete]),
        "Pagination" => names(&[Pagination::Auto, Pagination::Index, Pagination::Cursor]),
        "GroupMembers" => names(&[GroupMembers::Listed, GroupMembers::ByMemberFilter]),
        _ => return message,
    };
    let choices: Vec<String> = choices.iter().map(|c| format!("`{c}`")).collect();
    format!("`{value}` is not one of {}", choices.join(", "))
}

/// serde reads the `[directory]` table whole to find its `kind` first, and the
/// errors it gives for the table's fields then carry the key `directory` alone.
/// The field is found again from what the error names: the field itself, or the
/// value it refused when exactly one field of the table holds that value.
fn locate_in_directory_table(raw: &config::Config, file: &Path, error: ConfigError) -> ConfigError {
    let ConfigError::Key { path, key, message } = error else {
        return error;
    };
    let table = raw.get_table("directory").unwrap_or_default();
    let field = if key == "directory" {
        field_named_by(&table, &message)
    } else {
        None
    };
    match field {
        Some(field) => {
            let key = format!("directory.{field}");
            let origin = table
                .get(&field)
                .and_then(|v| v.origin())
                .map(str::to_owned);
            ConfigError::Key {
                path: value_source(file, origin, Some(&key)),
                key,
                message,
            }
        }
        None => ConfigError::Key { path, key, message },
    }
}

/// What a required key holds, for the error that says it is missing: a first
/// configuration written from scratch meets these before any other.
fn what_a_required_key_holds(key: &str, directory_kind: Option<String>) -> Option<String> {
    // `policy.mapping[2].role` is any mapping's `role`.
    let general: String = match (key.find('['), key.find(']')) {
        (Some(open), Some(close)) if open < close => {
            format!("{}{}", &key[..open], &key[close + 1..])
        }
        _ => key.to_owned(),
    };
    Some(match general.as_str() {
        "workspace.url" => "the workspace's SCIM base URL, up to and including the version, \
                            such as url = \"https://www.taskade.com/scim/v2\""
            .to_owned(),
        "directory.path" => "the directory export, a .json or .csv file (README: Directory \
                             file format), such as path = \"directory.json\""
            .to_owned(),
        "policy.mapping.group" => "the directory group whose members this mapping gives \
                                   access, such as group = \"Engineering\""
            .to_owned(),
        "policy.mapping.workspace_group" => "the workspace group (the SCIM Group's \
                                             displayName: a workspace or folder) they are put \
                                             in, such as workspace_group = \"Engineering\""
            .to_owned(),
        "policy.mapping.role" => {
            let roles: Vec<String> = Role::ALL.iter().rev().map(|r| format!("`{r}`")).collect();
            format!("the role the mapping gives, one of {}", roles.join(", "))
        }
        "report.email.smtp_url" | "report.email.from" | "report.email.to" => {
            "[report.email] needs smtp_url, from and to, such as smtp_url = \
             \"smtp://127.0.0.1:25\", from = \"seatwarden@example.com\", to = \
             [\"it-security@example.com\"]"
                .to_owned()
        }
        other if other.starts_with("directory.") => match directory_kind.as_deref() {
            Some(kind) if DIRECTORY_KINDS.contains(&kind) && kind != "file" => {
                format!("config/{kind}.example.toml shows every key of a kind = {kind:?} directory")
            }
            _ => return None,
        },
        _ => return None,
    })
}

/// An IANA time zone (`schedule.timezone`, `report.timezone`). Refused, the
/// message names the zone meant when the name differs only in case
/// (`europe/berlin`) or is a zone's city alone (`Berlin`), as people write them.
/// Exceptions that ended (the entry keeps nothing any more, and reads as if it
/// did), and those that run more than a year: an account kept that long is one
/// to protect, which says so.
fn exceptions_to_look_at(
    exceptions: &[Exception],
    now: chrono::DateTime<chrono::Utc>,
    tz: chrono_tz::Tz,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for (index, exception) in exceptions.iter().enumerate() {
        let until = crate::report::local_minute(exception.until, tz);
        if exception.until <= now {
            warnings.push(format!(
                "safety.exceptions[{index}]: the exception for {} ended at {until}: seatwarden \
                 manages the account again (deactivates it if its person left); take the \
                 entry out",
                exception.user_name
            ));
        } else if exception.until - now > chrono::TimeDelta::days(366) {
            warnings.push(format!(
                "safety.exceptions[{index}]: the exception for {} runs until {until}, more than \
                 a year: an account kept for good belongs in safety.protected",
                exception.user_name
            ));
        }
    }
    warnings
}

/// The latest end an exception may have: the ledger stores times as RFC 3339
/// text, which has 4-digit years only (a time of the year 10000 is written
/// `+10000-…` and no read takes it back), and an episode an exception puts off is
/// due an SLA (at most 100 years) after its end. It is 9000-01-01 on the clock
/// of `tz`, where `until = "8999-12-31"` ends: taken in UTC, that date ended
/// past the bound in every zone west of UTC and was refused.
fn latest_exception_end(tz: chrono_tz::Tz) -> chrono::DateTime<chrono::Utc> {
    chrono::NaiveDate::from_ymd_opt(8999, 12, 31)
        .and_then(|day| end_of_day(day, tz))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

/// When `day` ends on the clock of `tz`: the next midnight, or an hour later in
/// a zone whose clocks skip that midnight. `None` past the last day chrono has.
fn end_of_day(day: chrono::NaiveDate, tz: chrono_tz::Tz) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::TimeZone;
    let midnight = day.succ_opt()?.and_time(chrono::NaiveTime::MIN);
    tz.from_local_datetime(&midnight)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(midnight + chrono::TimeDelta::hours(1)))
                .earliest()
        })
        .map(|at| at.with_timezone(&chrono::Utc))
}

/// An exception's `until`: a date keeps the account through that day (it ends
/// at the next midnight), a time without an offset is on the clock of `tz`, and
/// one with an offset (or `Z`) is taken as it is.
fn parse_until(text: &str, tz: chrono_tz::Tz) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::{NaiveDate, NaiveDateTime, TimeZone};
    let text = text.trim();
    let accepted = "a date (2026-12-15: through that day), a time on the clock of \
                    report.timezone (2026-12-15T17:00:00) or one with its offset \
                    (2026-12-15T17:00:00+01:00)";
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if day.succ_opt().is_none() {
            return Err(format!("{text:?}: no day follows it"));
        }
        return end_of_day(day, tz)
            .ok_or_else(|| format!("{text:?}: its end is no time on the clock of {tz}"));
    }
    let local = [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
    .ok_or_else(|| format!("{text:?} is not {accepted}"))?;
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(at) => Ok(at.with_timezone(&chrono::Utc)),
        // Of a time the clock shows twice, the later: an exception ends no
        // sooner than it says.
        chrono::LocalResult::Ambiguous(_, later) => Ok(later.with_timezone(&chrono::Utc)),
        chrono::LocalResult::None => Err(format!(
            "{text:?} does not exist on the clock of {tz} (it is skipped when the clocks \
             go forward): give a time with its offset"
        )),
    }
}

/// A UTC offset written where a zone is wanted (`GMT+1`, `UTC+01:00`, `+0530`):
/// its minutes east of Greenwich, read as ISO 8601 and people read it (`GMT+1`
/// is an hour ahead of UTC), not as POSIX does.
fn written_offset(text: &str) -> Option<i32> {
    let upper = text.to_ascii_uppercase();
    let rest = upper
        .strip_prefix("UTC")
        .or_else(|| upper.strip_prefix("GMT"))
        .unwrap_or(&upper);
    let (sign, digits) = if let Some(digits) = rest.strip_prefix('+') {
        (1, digits)
    } else {
        (-1, rest.strip_prefix('-')?)
    };
    let (hours, minutes) = match digits.split_once(':') {
        Some(parts) => parts,
        None if digits.len() == 4 => digits.split_at(2),
        None => (digits, "00"),
    };
    let number = |text: &str| {
        (!text.is_empty() && text.len() <= 2 && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<i32>().ok())
            .flatten()
    };
    let (hours, minutes) = (number(hours)?, number(minutes)?);
    (hours <= 14 && minutes < 60).then_some(sign * (hours * 60 + minutes))
}

/// Why an offset is refused as a zone, and what to write: the zone of a place
/// (its clock changes for daylight saving time, an offset's does not), or, for a
/// whole-hour offset all year, the `Etc/GMT` zone, whose sign is the opposite
/// of the offset's (POSIX): suggesting `Etc/GMT+1` for `GMT+1` would set the
/// schedule two hours off.
fn offset_is_no_zone(zone: &str, minutes_east: i32) -> String {
    let (hours, minutes) = (minutes_east.abs() / 60, minutes_east.abs() % 60);
    let sign = if minutes_east < 0 { '-' } else { '+' };
    let fixed = match (minutes_east, minutes) {
        (0, _) => "; \"UTC\" for UTC itself".to_owned(),
        (_, 0) if (-12 * 60..=14 * 60).contains(&minutes_east) => {
            let etc_sign = if minutes_east < 0 { '+' } else { '-' };
            format!(
                "; for UTC{sign}{hours:02}:00 all year, \"Etc/GMT{etc_sign}{hours}\" (the Etc/GMT \
                 zones count west of Greenwich as positive)"
            )
        }
        // No Etc/GMT zone has minutes (or lies past ±12/14 h): a place's zone only.
        _ => String::new(),
    };
    format!(
        "unknown time zone {zone:?}: that is a UTC offset, not a time zone: write the IANA \
         zone of the place whose clock is meant, such as \"Europe/Berlin\" (it changes for \
         daylight saving time, an offset does not){fixed}"
    )
}

/// Why a configuration file that is not UTF-8 is refused: where its first byte
/// that is not, and what the file most likely is instead. Windows editors save
/// Windows-1252 (a group such as "Geschäftsführung" then is not UTF-8), and
/// Windows PowerShell's `Out-File` and `>` write UTF-16.
fn config_not_utf8(bytes: &[u8], error: std::str::Utf8Error) -> String {
    const SAVE_AS: &str = "save it as UTF-8 (PowerShell: `Set-Content -Encoding utf8`; \
                           Notepad: Save As, Encoding UTF-8)";
    if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
        return format!(
            "the file is UTF-16 (it starts with a UTF-16 byte-order mark), not UTF-8: {SAVE_AS}"
        );
    }
    let (good, rest) = bytes.split_at(error.valid_up_to().min(bytes.len()));
    let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = good
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    // Characters, not bytes, so the column is where an editor shows it.
    let column = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
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
    format!(
        "line {line}, column {column}: {noun} {} {verb} not UTF-8: the configuration must be \
         UTF-8 (one saved as Windows-1252 or Latin-1 writes \"ä\" as 0xe4); {SAVE_AS}",
        bad.join(" ")
    )
}

fn parse_time_zone(zone: &str) -> Result<chrono_tz::Tz, String> {
    if let Ok(tz) = zone.parse() {
        return Ok(tz);
    }
    let typed = zone.trim();
    if let Some(minutes_east) = written_offset(typed) {
        return Err(offset_is_no_zone(zone, minutes_east));
    }
    let city = |name: &str| name.rsplit('/').next().unwrap_or(name).replace('_', " ");
    // "America/New York": IANA names write spaces as `_`.
    let underscored = typed.replace(' ', "_");
    let mut meant: Vec<&str> = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|tz| tz.name())
        .filter(|name| name.eq_ignore_ascii_case(typed) || name.eq_ignore_ascii_case(&underscored))
        .collect();
    if meant.is_empty() && !typed.is_empty() {
        meant = chrono_tz::TZ_VARIANTS
            .iter()
            .map(|tz| tz.name())
            .filter(|name| {
                name.contains('/') && city(name).eq_ignore_ascii_case(&typed.replace('_', " "))
            })
            .collect();
    }
    let names: Vec<String> = meant
        .iter()
        .take(3)
        .map(|name| format!("{name:?}"))
        .collect();
    Err(match names.as_slice() {
        [] => format!(
            "unknown time zone {zone:?}: use an IANA name such as \"Europe/Berlin\" or \"UTC\""
        ),
        _ => format!(
            "unknown time zone {zone:?}: IANA names are spelt exactly; did you mean {}?",
            names.join(" or ")
        ),
    })
}

/// Threshold percentages that allow not one action of their class at the
/// smallest workspaces they apply to: from `min_population_for_percent` managed
/// accounts until the percentage of them reaches one, the per-run (or 24 h)
/// limit rounds down to 0, and every action of the class waits for `approve`
/// (for deprovisions, each single leaver's: no same-day deprovisioning without
/// a human). Allowed, as a deliberate "nothing without a human", but said at
/// load and by `check-config`, with the population from which one is allowed. A
/// count of 0 says so itself, and is not repeated here.
fn percentages_allowing_none(settings: &GuardSettings, admin_command: &str) -> Vec<String> {
    type LimitOf = fn(&crate::guard::Limits, usize, usize) -> usize;
    let min_population = settings.min_population_for_percent;
    let mut warnings = Vec::new();
    for class in crate::model::ActionClass::ALL {
        let limits = settings.limits(class);
        let windows: [(String, usize, f64, LimitOf, &str); 2] = [
            (
                format!("safety.max_{class}_percent"),
                limits.per_run,
                limits.percent,
                crate::guard::run_limit,
                "per-run",
            ),
            (
                format!("safety.max_{class}_percent_per_day"),
                limits.per_day,
                limits.percent_per_day,
                crate::guard::day_limit,
                "24 h",
            ),
        ];
        for (key, count, percent, limit_of, window) in windows {
            if count == 0 || limit_of(&limits, min_population, min_population) > 0 {
                continue;
            }
            // The smallest population whose share is one action (as `limit_of`
            // rounds it): 100 / percent up, or one more for a float just short.
            let allows_one = (percent > 0.0)
                .then(|| (100.0 / percent).ceil())
                .filter(|n| n.is_finite() && *n < 1e15)
                .map(|n| n as usize)
                .map(|n| {
                    (n..n.saturating_add(3))
                        .find(|m| limit_of(&limits, min_population, *m) > 0)
                        .unwrap_or(n)
                });
            let noun = class.noun();
            warnings.push(match allows_one {
                Some(from) => format!(
                    "{key} = {percent} is less than one of {min_population} to {} managed \
                     accounts: with safety.min_population_for_percent = {min_population}, a \
                     workspace of that size has a {window} limit of 0 {noun}, and each waits \
                     for `{admin_command} approve`; set min_population_for_percent to {from} \
                     (or more), or raise the percentage, unless that is meant",
                    from - 1
                ),
                None => format!(
                    "{key} = {percent}: from safety.min_population_for_percent = \
                     {min_population} managed accounts on, the {window} limit is 0 {noun}, and \
                     each waits for `{admin_command} approve`; raise the percentage unless \
                     that is meant"
                ),
            });
        }
    }
    warnings
}

/// Two `[[policy.mapping]]` tables for the same directory group and workspace
/// group with different roles: one of them does nothing (the highest role wins),
/// most often a copy-paste left with the role it came with, which may grant
/// more than meant. One warning per later table, naming both and the role given.
fn mappings_repeated(mappings: &[MappingConfig]) -> Vec<String> {
    let mut warnings = Vec::new();
    for (later, mapping) in mappings.iter().enumerate() {
        let earlier = mappings[..later].iter().position(|m| {
            m.group == mapping.group
                && m.workspace_group == mapping.workspace_group
                && m.role != mapping.role
        });
        if let Some(earlier) = earlier {
            let first = &mappings[earlier];
            warnings.push(format!(
                "policy.mapping[{earlier}] and policy.mapping[{later}] both map group {:?} to \
                 workspace group {:?}, as {} and as {}: its members get {}, the higher; \
                 remove the table not meant",
                mapping.group,
                mapping.workspace_group,
                first.role,
                mapping.role,
                first.role.max(mapping.role)
            ));
        }
    }
    warnings
}

/// `Etc/GMT+5` is an IANA name of a fixed offset with the POSIX sign: five
/// hours *behind* UTC (UTC-05:00), the opposite of what ISO 8601 offsets and
/// most people mean by it. Written for UTC+05:00, every schedule runs ten hours
/// off (the digest at 22:00 rather than 08:00). Allowed, with a warning giving
/// the offset it is, and the name of the opposite one.
fn zone_with_posix_sign(key: &str, zone: &str) -> Option<String> {
    let rest = zone.trim().strip_prefix("Etc/GMT")?;
    let (sign, hours) = (rest.get(..1)?, rest.get(1..)?);
    let hours: u32 = hours.parse().ok().filter(|hours| *hours != 0)?;
    // The offset it is, and the one probably meant (the other sign).
    let (is, meant) = match sign {
        "+" => ('-', '+'),
        "-" => ('+', '-'),
        _ => return None,
    };
    // The zone of the offset meant has the sign of the offset this one is; there
    // is none east of UTC+12:00 read the other way (no `Etc/GMT+14`).
    let other = format!("Etc/GMT{is}{hours}");
    let instead = if other.parse::<chrono_tz::Tz>().is_ok() {
        format!("for UTC{meant}{hours:02}:00 write {other:?}, or better")
    } else {
        "for another offset write".to_owned()
    };
    Some(format!(
        "{key}: {zone:?} is UTC{is}{hours:02}:00: the Etc/GMT zones count west of Greenwich as \
         positive (POSIX), the opposite of offsets as ISO 8601 writes them; {instead} the zone \
         of a place (Asia/Karachi, Europe/Berlin), which keeps its daylight saving time too"
    ))
}

/// `EST` and `MST` are IANA names, but of a fixed offset all year (UTC-05:00,
/// UTC-07:00), not of New York's or Denver's clock, which people who write them
/// usually mean: a schedule at 08:00 "EST" runs at 09:00 on that clock all
/// summer. Allowed (Panama and Arizona keep no daylight saving), with a warning
/// naming the zones with and without it. `HST` is Hawaii's clock, which keeps
/// none either.
fn zone_without_daylight_saving(key: &str, zone: &str) -> Option<String> {
    let (offset, with, without) = match zone {
        "EST" => ("UTC-05:00", "America/New_York", "America/Panama"),
        "MST" => ("UTC-07:00", "America/Denver", "America/Phoenix"),
        _ => return None,
    };
    Some(format!(
        "{key}: {zone:?} is {offset} all year, without daylight saving time: for the clock \
         that changes in summer write {with:?}; {without:?} if none is meant"
    ))
}

/// Why a `SEATWARDEN__POLICY__MAPPING…` variable is refused.
const MAPPING_FROM_FILE_ONLY: &str = "the [[policy.mapping]] tables are read from the file \
     only; no environment variable sets them: unset this one";

/// Why a `SEATWARDEN__SAFETY__EXCEPTIONS…` variable is refused.
const EXCEPTIONS_FROM_FILE_ONLY: &str = "the [[safety.exceptions]] tables are read from the \
     file only; no environment variable sets them: unset this one";

/// Why a `SEATWARDEN__SAFETY__DISTINCT_GROUPS` variable is refused: the names
/// differ from configured ones in spaces, quotes and invisible characters, which
/// a comma-separated variable would trim or split, so it is not one of the lists
/// a variable sets (its error offered the file's `["a", "b"]` form instead).
const DISTINCT_GROUPS_FROM_FILE_ONLY: &str = "safety.distinct_groups is read from the file \
     only, written exactly as the directory spells the names (spaces, quotes and commas \
     kept); no environment variable sets it: unset this one";

/// What no environment variable sets (arrays of tables, and a list whose names
/// must keep every character), and why a variable for one is refused.
const TABLES_FROM_FILE_ONLY: [(&str, &str); 3] = [
    ("policy.mapping", MAPPING_FROM_FILE_ONLY),
    ("safety.exceptions", EXCEPTIONS_FROM_FILE_ONLY),
    ("safety.distinct_groups", DISTINCT_GROUPS_FROM_FILE_ONLY),
];

/// The kinds of directory source `[directory]` takes, as its `kind` spells them.
const DIRECTORY_KINDS: [&str; 5] = ["file", "okta", "entra", "ldap", "scim"];

/// serde words an unknown key and a missing one by itself; the file and the key
/// are named as for every other mistake (`seatwarden.toml: key `directory.kindd`:
/// …`), with what is accepted there:
/// - an unknown section at the top (`[reprt]`) becomes a key error of its own;
/// - an unknown key in `[directory]`: serde took `kind` to pick the variant and
///   lists only that variant's other keys (`expected `path``), so `kind` is added
///   and the list is said to be the one of that kind;
/// - a missing key becomes a key error, and a missing `kind` lists the kinds.
///
/// `kind_variable`: the variable that set `directory.kind`, if one did (the
/// file's own `kind` is then not the one the keys are checked against).
fn name_what_is_accepted(
    error: ConfigError,
    directory_kind: Option<String>,
    kind_variable: Option<&str>,
) -> ConfigError {
    match error {
        ConfigError::Invalid { path, message } => {
            if let Some(field) = unknown_field(&message) {
                return ConfigError::Key {
                    path,
                    key: field.to_owned(),
                    message,
                };
            }
            let missing = message
                .strip_prefix("missing configuration field \"")
                .and_then(|rest| rest.strip_suffix('"'));
            match missing {
                Some(key) => {
                    let message = if key == "directory.kind" {
                        let kinds: Vec<String> =
                            DIRECTORY_KINDS.iter().map(|k| format!("`{k}`")).collect();
                        format!("missing: the directory source, one of {}", kinds.join(", "))
                    } else if !key.contains('.') {
                        format!("missing: the file has no [{key}] section, which is required")
                    } else {
                        match what_a_required_key_holds(&full_key(key, ""), directory_kind) {
                            Some(what) => format!("missing: {what}"),
                            None => "missing".to_owned(),
                        }
                    };
                    ConfigError::Key {
                        path,
                        key: full_key(key, ""),
                        message,
                    }
                }
                None => ConfigError::Invalid { path, message },
            }
        }
        ConfigError::Key { path, key, message }
            if key.starts_with("directory.") && unknown_field(&message).is_some() =>
        {
            let message = match (message.split_once(", expected "), directory_kind) {
                (Some((unknown, expected)), Some(kind)) => {
                    let accepted: Vec<String> = std::iter::once("kind")
                        .chain(expected.split('`').skip(1).step_by(2))
                        .map(|name| format!("`{name}`"))
                        .collect();
                    let set_by = kind_variable
                        .map(|name| format!(", as environment variable {name} sets it"))
                        .unwrap_or_default();
                    format!(
                        "{unknown}, expected one of {} (the keys of a `kind = {kind:?}` \
                         directory{set_by})",
                        accepted.join(", ")
                    )
                }
                _ => message,
            };
            ConfigError::Key { path, key, message }
        }
        other => other,
    }
}

/// serde names types as Rust does ("invalid type: 64-bit integer `-5`, expected an
/// unsigned 64 bit or less integer", "expected a sequence"): said as the file
/// spells values, last, once the messages were matched against the file.
fn in_plain_words(error: ConfigError, ldap: Option<bool>) -> ConfigError {
    match error {
        ConfigError::Key { path, key, .. }
            if (key == "policy.mapping" || key.starts_with("policy.mapping["))
                && path.to_string_lossy().starts_with("environment variable ") =>
        {
            ConfigError::Key {
                path,
                key,
                message: MAPPING_FROM_FILE_ONLY.to_owned(),
            }
        }
        // A variable that names a table (`SEATWARDEN__WORKSPACE`) set to text: most
        // often a secret meant for one of its keys (`SEATWARDEN__WORKSPACE__TOKEN`),
        // so the text is not shown.
        ConfigError::Key { path, key, message }
            if path.to_string_lossy().starts_with("environment variable ")
                && message.starts_with("invalid type: string ")
                && message
                    .rsplit_once(", expected ")
                    .is_some_and(|(_, expected)| {
                        expected.starts_with("struct ")
                            || expected.starts_with("internally tagged enum ")
                            || expected == "a map"
                    }) =>
        {
            let variable = path
                .to_string_lossy()
                .trim_start_matches("environment variable ")
                .to_owned();
            ConfigError::Key {
                message: format!(
                    "names a table (`[{key}]`), not a key, so it cannot be set to text: set \
                     one of its keys, as {variable}__<KEY> (the value is not shown: it may be \
                     a secret meant for one of them)"
                ),
                path,
                key,
            }
        }
        // `[policy.mapping]` for `[[policy.mapping]]`: one table where a list of
        // them is, which serde calls a map where a sequence was expected. The
        // generic hint (`such as ["a", "b"]`) would send people the wrong way.
        ConfigError::Key { path, key, message }
            if key == "policy.mapping" && message.starts_with("invalid type: map, ") =>
        {
            ConfigError::Key {
                message: "is one table where a list of them is expected: head each \
                          mapping [[policy.mapping]], with double brackets, not \
                          [policy.mapping]"
                    .to_owned(),
                path,
                key,
            }
        }
        // The `url` crate's words for a URL typed as one (the directory's `url`,
        // `graph_url`, `login_url`): a host without its scheme gets the fix the
        // workspace URL's gets.
        ConfigError::Key { path, key, message }
            if message.starts_with("relative URL without a base: ") =>
        {
            let text = message
                .trim_start_matches("relative URL without a base: ")
                .trim_matches('"');
            ConfigError::Key {
                path,
                key,
                message: not_a_url(text, "https", url::ParseError::RelativeUrlWithoutBase),
            }
        }
        ConfigError::Key { path, key, message } => ConfigError::Key {
            message: with_allowed_range(&key, plain_type_words(&message), ldap),
            path,
            key,
        },
        other => other,
    }
}

fn plain_type_words(message: &str) -> String {
    // `invalid value:` is what a `[directory]` key (an internally tagged enum,
    // read through serde's buffered content) says where the others say
    // `invalid type:` (`start_tls = "yes"`).
    let Some((found, expected)) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
        .and_then(|rest| rest.split_once(", expected "))
    else {
        return message.to_owned();
    };
    let quoted = |text: &str| -> Option<String> {
        text.strip_prefix('`')
            .and_then(|rest| rest.strip_suffix('`'))
            .map(str::to_owned)
    };
    let found = match found {
        "sequence" => "a list".to_owned(),
        "map" => "a table".to_owned(),
        other => {
            let (kind, value) = other.rsplit_once(' ').unwrap_or(("", other));
            match (kind, quoted(value)) {
                (_, Some(value)) if kind.ends_with("integer") || kind == "floating point" => {
                    format!("the number {value}")
                }
                ("boolean", Some(value)) => value,
                _ => match other.strip_prefix("string ") {
                    Some(text) => format!("the text {text}"),
                    None => other.to_owned(),
                },
            }
        }
    };
    let negative = found.starts_with("the number -");
    let expected = match expected {
        "a sequence" => "a list, such as [\"a\", \"b\"]",
        "a map" => "a table",
        "a string" => "text in quotes",
        "a boolean" => "true or false",
        "an integer" => "a whole number",
        "a floating point" => "a number, such as 5 or 2.5",
        unsigned if unsigned.starts_with("an unsigned") || unsigned.starts_with('u') => {
            if negative {
                "a whole number, 0 or more"
            } else {
                "a whole number"
            }
        }
        other => other,
    };
    format!("expected {expected}, found {found}")
}

/// A section headed as a list of tables (`[[workspace]]`, after the file's
/// `[[policy.mapping]]`): serde reads a struct from a list as its fields in
/// order, so the error names `workspace[0]` and the type of its first field
/// (`expected text in quotes, found a table`). When the file has that header,
/// the error names the section and the fix instead.
fn one_table_headed_as_a_list(error: ConfigError, file: &Path) -> ConfigError {
    let ConfigError::Key { path, key, message } = error else {
        return error;
    };
    let section = key.strip_suffix("[0]").filter(|s| *s != "policy.mapping");
    let headed = section.is_some_and(|section| {
        path == file
            && std::fs::read_to_string(file).is_ok_and(|text| {
                text.lines().any(|line| {
                    let line: String = line.chars().filter(|c| !c.is_whitespace()).collect();
                    line == format!("[[{section}]]")
                })
            })
    });
    match section {
        Some(section) if headed => ConfigError::Key {
            message: format!(
                "is one table, headed [{section}] with single brackets: [[{section}]] makes \
                 a list of tables, which only [[policy.mapping]] is"
            ),
            key: section.to_owned(),
            path,
        },
        _ => ConfigError::Key { path, key, message },
    }
}

/// The key serde's "unknown field `x`, expected …" names.
fn unknown_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
}

fn field_named_by(table: &config::Map<String, config::Value>, message: &str) -> Option<String> {
    let quoted = |rest: &str| rest.split('`').next().map(str::to_owned);
    if let Some(rest) = message.strip_prefix("unknown field `") {
        return quoted(rest);
    }
    let refused_by = |value: &config::Value| -> bool {
        if let Some(rest) = message.strip_prefix("unknown variant `") {
            return matches!(&value.kind, config::ValueKind::String(s) if quoted(rest).as_deref() == Some(s.as_str()));
        }
        let invalid = message
            .strip_prefix("invalid type: ")
            .or_else(|| message.strip_prefix("invalid value: "))
            .and_then(|rest| rest.split_once(", expected"));
        match invalid {
            Some((refused, _)) => as_serde_unexpected(value).as_deref() == Some(refused),
            // Parsers with their own messages (URLs) quote the text they refused.
            None => {
                matches!(&value.kind, config::ValueKind::String(s) if message.contains(&format!("{s:?}")))
            }
        }
    };
    let holders: Vec<&String> = table
        .iter()
        .filter(|(_, value)| refused_by(value))
        .map(|(field, _)| field)
        .collect();
    match holders.as_slice() {
        [field] => Some((*field).clone()),
        _ => None,
    }
}

/// How serde's `Unexpected` spells a scalar in "invalid type" errors.
fn as_serde_unexpected(value: &config::Value) -> Option<String> {
    use config::ValueKind;
    Some(match &value.kind {
        ValueKind::String(s) => format!("string {s:?}"),
        ValueKind::Boolean(b) => format!("boolean `{b}`"),
        ValueKind::I64(n) => format!("integer `{n}`"),
        ValueKind::I128(n) => format!("integer `{n}`"),
        ValueKind::U64(n) => format!("integer `{n}`"),
        ValueKind::U128(n) => format!("integer `{n}`"),
        ValueKind::Float(_) | ValueKind::Nil | ValueKind::Table(_) | ValueKind::Array(_) => {
            return None;
        }
    })
}

/// A request timeout: a duration longer than zero (with zero every request would
/// time out at once, and every run fail).
fn parse_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!(
            "timeout {:?} must be longer than zero",
            text.trim()
        )),
        timeout => Ok(timeout),
    }
}

/// Whether `url` names this machine (`localhost`, 127.0.0.0/8, `::1`), where a
/// connection without TLS crosses no network.
pub(crate) fn host_is_loopback(url: &url::Url) -> bool {
    match url.host() {
        // Schemes the url crate does not know (ldap:, smtp:) keep an IPv4 host as a name.
        Some(url::Host::Domain(host)) => {
            host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The Microsoft cloud a Graph or sign-in host belongs to (national clouds have
/// their own of both), by the hosts Microsoft documents; `None` for any other
/// host (a stand-in, a proxy).
fn microsoft_cloud(host: &str) -> Option<&'static str> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match host.as_str() {
        "graph.microsoft.com"
        | "login.microsoftonline.com"
        | "login.microsoft.com"
        | "login.windows.net" => Some("the global Microsoft cloud"),
        "graph.microsoft.us" | "dod-graph.microsoft.us" | "login.microsoftonline.us" => {
            Some("the US Government cloud")
        }
        "microsoftgraph.chinacloudapi.cn"
        | "login.chinacloudapi.cn"
        | "login.partner.microsoftonline.cn" => Some("the China cloud (21Vianet)"),
        _ => None,
    }
}

/// When Entra's `graph_url` and `login_url` (either left at its global default)
/// belong to different Microsoft clouds: a token from one cloud's sign-in is
/// never one the other's Graph takes, and the identity platform refuses the
/// request with an AADSTS error about the tenant or the scope, which does not say
/// that the other URL is the one to set.
fn entra_clouds_differ(
    graph_url: Option<&url::Url>,
    login_url: Option<&url::Url>,
) -> Option<String> {
    let host = |url: Option<&url::Url>, default: &'static str| -> Option<String> {
        match url {
            Some(url) => url.host_str().map(str::to_owned),
            None => Some(default.to_owned()),
        }
    };
    let graph = host(graph_url, "graph.microsoft.com")?;
    let login = host(login_url, "login.microsoftonline.com")?;
    let (graph_cloud, login_cloud) = (microsoft_cloud(&graph)?, microsoft_cloud(&login)?);
    if graph_cloud == login_cloud {
        return None;
    }
    // The URL to change: the one left at its default, else login_url.
    let (key, set, cloud, other, other_cloud, fix) = match (graph_url, login_url) {
        (None, Some(_)) => (
            "graph_url",
            None,
            graph_cloud,
            "login_url",
            login_cloud,
            graph_cloud_url(login_cloud),
        ),
        _ => (
            "login_url",
            login_url,
            login_cloud,
            "graph_url",
            graph_cloud,
            login_cloud_url(graph_cloud),
        ),
    };
    let set = set.map_or_else(|| "unset".to_owned(), url::Url::to_string);
    Some(format!(
        "directory.{key} ({set}) is {cloud}'s, but directory.{other} is {other_cloud}'s: \
         a token from one cloud's sign-in never works with another's Graph (the token \
         request fails with an AADSTS error about the tenant or the scope); set \
         directory.{key} = \"{fix}\""
    ))
}

/// The sign-in URL of the cloud [`microsoft_cloud`] names.
fn login_cloud_url(cloud: &str) -> &'static str {
    match cloud {
        "the US Government cloud" => "https://login.microsoftonline.us",
        "the China cloud (21Vianet)" => "https://login.chinacloudapi.cn",
        _ => "https://login.microsoftonline.com",
    }
}

/// The Graph URL of the cloud [`microsoft_cloud`] names.
fn graph_cloud_url(cloud: &str) -> &'static str {
    match cloud {
        "the US Government cloud" => "https://graph.microsoft.us",
        "the China cloud (21Vianet)" => "https://microsoftgraph.chinacloudapi.cn",
        _ => "https://graph.microsoft.com",
    }
}

/// When the state database's folder does not exist: every command that records a
/// run would fail there ("cannot create the state database") after reading both
/// sides. Not an error: systemd's `StateDirectory=` creates the folder only when
/// the service starts, after a `check-config` run before the first start.
fn missing_state_folder(database: &Path) -> Option<String> {
    let folder = database.parent().filter(|f| !f.as_os_str().is_empty())?;
    match std::fs::metadata(folder) {
        Ok(meta) if meta.is_dir() => None,
        Ok(_) => Some(format!(
            "state.path: {} is not a folder; the state database cannot be created there",
            folder.display()
        )),
        Err(e) => Some(format!(
            "state.path: its folder {} cannot be used ({e}); create it, writable by the \
             service's user (systemd's StateDirectory= does when the service starts), or \
             choose another path: runs cannot record anything until then",
            folder.display()
        )),
    }
}

/// Why a search base is not a DN, with the DN a domain name would be.
fn not_a_dn(value: &str) -> String {
    let labels: Vec<&str> = value.trim().split('.').collect();
    let example = if labels.len() > 1 && labels.iter().all(|label| !label.is_empty()) {
        labels
            .iter()
            .map(|label| format!("DC={label}"))
            .collect::<Vec<_>>()
            .join(",")
    } else {
        "OU=Staff,DC=corp,DC=example,DC=com".to_owned()
    };
    format!(
        "{value:?} is not a DN (attribute=value pairs): write the search base as one, such as {example:?}"
    )
}

/// A SCIM base URL as people copy it wrongly, caught here rather than by the
/// first run: with an endpoint after the version (`…/scim/v2/Users`, copied from
/// the provider's documentation of one request), which the client adds itself,
/// or with a query or fragment, which the client refuses at every run without
/// naming the key.
fn scim_base_url_mistake(url: &url::Url) -> Option<String> {
    const ENDPOINTS: [&str; 7] = [
        "Users",
        "Groups",
        "ServiceProviderConfig",
        "Schemas",
        "ResourceTypes",
        "Bulk",
        "Me",
    ];
    if url.query().is_some() || url.fragment().is_some() {
        return Some(
            "has a query or fragment (?…, #…), which the SCIM endpoints cannot follow: write \
             the base URL alone, up to and including the version, such as \
             \"https://www.taskade.com/scim/v2\""
                .to_owned(),
        );
    }
    let last = url
        .path_segments()
        .and_then(|mut segments| segments.rfind(|s| !s.is_empty()))?;
    let endpoint = ENDPOINTS
        .iter()
        .find(|endpoint| endpoint.eq_ignore_ascii_case(last))?;
    let mut base = url.clone();
    if let Ok(mut segments) = base.path_segments_mut() {
        segments.pop_if_empty().pop();
    }
    Some(format!(
        "ends in the endpoint /{endpoint}, which seatwarden adds itself: write the base URL, \
         up to and including the version, such as \"{}\"",
        base.as_str().trim_end_matches('/')
    ))
}

/// The Okta org URL as people copy it wrongly: with an API path
/// (`/api/v1`, which seatwarden adds itself, so every request would go to
/// `/api/v1/api/v1/…`), or from the Admin Console (`acme-admin.okta.com/admin/…`),
/// whose domain does not serve the API.
fn okta_url_mistake(url: &url::Url) -> Option<String> {
    let host = url.host_str().unwrap_or_default();
    let (first, rest) = host.split_once('.').unwrap_or((host, ""));
    if let Some(org) = first.strip_suffix("-admin")
        && [
            "okta.com",
            "oktapreview.com",
            "okta-emea.com",
            "okta-gov.com",
        ]
        .iter()
        .any(|domain| rest.eq_ignore_ascii_case(domain))
    {
        return Some(format!(
            "{host} is the Admin Console's domain; the API answers on the org's: \
             \"{}://{org}.{rest}\"",
            url.scheme()
        ));
    }
    let path = url.path();
    (!matches!(path, "" | "/") || url.query().is_some()).then(|| {
        format!(
            "the org URL is only scheme and host (such as \"https://acme.okta.com\"), \
             without {path:?}{}: seatwarden adds /api/v1/… itself",
            if url.query().is_some() {
                " and a query"
            } else {
                ""
            }
        )
    })
}

/// What is wrong with an API token as written, if anything; never the token
/// itself. A token is one word (RFC 6750's `b64token`; Okta's API tokens too):
/// the scheme copied with it (`Bearer …`, Okta's `SSWS …`) would be sent as
/// `Bearer Bearer …` and refused as if the token were revoked, and a second line
/// (a comment, an old token left above the new one) cannot be sent in a header
/// at all, which the HTTP client reports without naming the key.
pub(crate) fn token_mistake(token: &str) -> Option<String> {
    let token = token.trim();
    if let Some((first, _)) = token.split_once(char::is_whitespace)
        && ["bearer", "ssws"]
            .iter()
            .any(|scheme| first.eq_ignore_ascii_case(scheme))
    {
        return Some(format!(
            "starts with the scheme `{first}`: keep the token alone (seatwarden sends the \
             `Authorization` scheme itself)"
        ));
    }
    token
        .contains(|c: char| c.is_whitespace() || c.is_control())
        .then(|| {
            "has a space, line break or control character inside it: keep the token alone, \
             on one line, with nothing else"
                .to_owned()
        })
}

/// What is wrong with an Entra client secret, trimmed: white space or a control
/// character inside it. Entra generates secrets from letters, digits and `-_.~`
/// (older ones also `+/=` and a few more), never a space: one inside is a paste
/// of more than the secret (the portal's row with its Secret ID, two secrets on
/// two lines), which Entra refuses as AADSTS7000215, naming no key.
pub(crate) fn client_secret_mistake(secret: &str) -> Option<String> {
    secret
        .trim()
        .contains(|c: char| c.is_whitespace() || c.is_control())
        .then(|| {
            "has a space, line break or control character inside it: keep the secret's \
             Value alone, on one line, with nothing else (Entra's secrets have none)"
                .to_owned()
        })
}

/// The core User schema's attributes are not extensions: written as one
/// (`urn:ietf:params:scim:schemas:core:2.0:User:roles`, the full path RFC 7643
/// allows), the role would be read from and written to an object of that name,
/// which no provider has, so every account would read as having no role (the
/// last-Owner rule seeing no Owner) and be given one as a plain string.
fn refuse_core_schema(schema: &str, attribute: &str) -> Result<(), String> {
    const CORE: &str = "urn:ietf:params:scim:schemas:core:";
    let is_core = schema
        .get(..CORE.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(CORE));
    if !is_core {
        return Ok(());
    }
    if attribute.eq_ignore_ascii_case("roles") {
        return Err(format!(
            "\"{schema}:{attribute}\" is the core `roles` attribute written in full: write \
             role_attribute = \"roles\""
        ));
    }
    Err(format!(
        "\"{schema}:{attribute}\" is an attribute of the core schema, not an extension: \
         the role travels in \"roles\" (the core attribute), \"groups\", or an extension \
         attribute such as \"urn:ietf:params:scim:schemas:extension:acme:2.0:User:role\""
    ))
}

/// The keys that hold a URL.
const URL_KEYS: [&str; 5] = [
    "workspace.url",
    "directory.url",
    "directory.graph_url",
    "directory.login_url",
    "report.email.smtp_url",
];

/// An error about a URL key as it may be shown: each text it quotes (`"…"`)
/// without a login (`svc:pw@`) or a query (`?token=…`). Such a URL is refused,
/// but the error that refuses it, or one about another mistake in it (a port out
/// of range, no scheme), goes to the terminal, the journal and the reload log.
fn without_url_credentials(key: &str, message: &str) -> String {
    // A key that is missing has no value to quote: what such an error quotes is
    // its own example, whose mail addresses (`from = "seatwarden@example.com"`)
    // would read as logins.
    if !URL_KEYS.contains(&key) || message.starts_with("missing: ") {
        return message.to_owned();
    }
    message
        .split('"')
        .enumerate()
        .map(|(i, part)| match i % 2 {
            1 => url_without_credentials(part),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\"")
}

/// `text`, a URL or what was meant as one, with its login and its query
/// replaced by `[redacted]`.
fn url_without_credentials(text: &str) -> String {
    let start = match text.find("://") {
        Some(i) => i + 3,
        None => text.len() - text.trim_start_matches('/').len(),
    };
    let (head, rest) = text.split_at(start);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(end);
    let mut shown = head.to_owned();
    match authority.rfind('@') {
        Some(at) => {
            shown.push_str("[redacted]");
            shown.push_str(&authority[at..]);
        }
        None => shown.push_str(authority),
    }
    match after.split_once('?') {
        // `smtp_url`'s one parameter, which the answers to a wrong `smtp_url`
        // suggest: no secret, and redacted the suggestion could not be followed.
        Some((path, query)) if query.split('#').next() == Some("tls=starttls") => {
            shown.push_str(path);
            shown.push('?');
            shown.push_str(query);
        }
        Some((path, query)) => {
            shown.push_str(path);
            shown.push_str("?[redacted]");
            if let Some((_, fragment)) = query.split_once('#') {
                shown.push('#');
                shown.push_str(fragment);
            }
        }
        None => shown.push_str(after),
    }
    shown
}

/// Why `text` is not a URL, with the fix for the usual cause: a host without its
/// scheme (`scim.example.com/scim/v2`), shown with `scheme`.
fn not_a_url(text: &str, scheme: &str, error: url::ParseError) -> String {
    match error {
        url::ParseError::RelativeUrlWithoutBase => format!(
            "not a URL: {text:?} has no scheme; write it in full, such as \"{scheme}://{}\"",
            text.trim().trim_start_matches('/')
        ),
        error => format!("not a URL: {error}"),
    }
}

/// When sweeps and reconciles can be further apart than `deprovision.sla`: a
/// leaver's SLA clock starts when one of them first sees the person leave, so
/// someone who leaves just after one keeps access for the whole gap without any
/// deadline running. Business-hours patterns hide a weekend gap a glance misses;
/// a clock change hides one in its own week only, so the weeks of the year's
/// changes are looked at too, not just the coming one.
fn sweeps_too_far_apart(
    settings: &DaemonSettings,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    let (from, gap) = longest_gap_in_a_year(
        &[&settings.sweep, &settings.reconcile],
        settings.timezone,
        now,
    )?;
    let sla = chrono::Duration::from_std(settings.sla).ok()?;
    (gap > sla).then(|| {
        format!(
            "schedule.sweep: no sweep or reconcile runs for up to {} (from {}), longer than \
             deprovision.sla ({}): a person who leaves just after one keeps their access that \
             long before seatwarden sees them leave, and their SLA clock only starts then; \
             sweep more often (the default is every 5 minutes, \"*/5 * * * *\")",
            span(gap),
            crate::model::clock_time(from, settings.timezone, "%a %H:%M"),
            span(sla)
        )
    })
}

/// A schedule that fires more than once a minute ([`Schedule::fires_per_minute`]):
/// six fields are taken, the first being the seconds, so `*/5 * * * * *`, most
/// likely meant as every 5 minutes, reconciles every 5 seconds. Warned about,
/// not refused: the README documents the seconds field, and a test setup may
/// want it.
fn fires_within_a_minute(settings: &DaemonSettings) -> Vec<String> {
    let jobs = [
        (
            "schedule.reconcile",
            Some(&settings.reconcile),
            "a full run, reading the directory and the workspace whole,",
        ),
        (
            "schedule.sweep",
            Some(&settings.sweep),
            "a sweep, reading the directory's changes,",
        ),
        (
            "schedule.digest",
            settings.digest.as_ref(),
            "a digest email",
        ),
    ];
    jobs.into_iter()
        .filter_map(|(key, schedule, what)| {
            let schedule = schedule?;
            let fires = schedule.fires_per_minute();
            (fires > 1).then(|| {
                format!(
                    "{key}: {:?} fires {fires} times a minute, {what} each time: with 6 fields \
                     the first is the seconds; for minutes write 5 fields, minute first \
                     (\"*/5 * * * *\" is every 5 minutes)",
                    schedule.pattern()
                )
            })
        })
        .collect()
}

/// A sweep fired while a reconcile runs waits for it, and is the only one to see
/// a leaver disabled after the reconcile read the directory: a time limit on the
/// reconcile no shorter than `deprovision.sla` lets such a leaver go overdue
/// before the sweep runs.
fn reconcile_limit_past_sla(settings: &DaemonSettings) -> Option<String> {
    let limit = settings.reconcile_max_duration?;
    (limit >= settings.sla).then(|| {
        format!(
            "schedule.reconcile_max_duration ({}) is not shorter than deprovision.sla ({}): \
             a sweep waits behind a running reconcile, so a person disabled after the \
             reconcile read the directory can keep their access past the SLA before the \
             sweep sees them; set it well under the SLA",
            span(chrono::Duration::from_std(limit).unwrap_or(chrono::Duration::MAX)),
            span(chrono::Duration::from_std(settings.sla).unwrap_or(chrono::Duration::MAX))
        )
    })
}

/// `report.email.resolve_after` no longer than the time between two reconciles
/// (from the next fire to the one after): a condition each reconcile judges (an
/// incomplete directory read) that comes and goes every other reconcile stays
/// clear longer than the hold, so it is resolved and alerted again each time,
/// which the hold is there to stop. `0s` asks for resolutions at once.
fn resolutions_held_within_a_reconcile(
    resolve_after: Duration,
    settings: &DaemonSettings,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    if resolve_after.is_zero() {
        return None;
    }
    let first = crate::schedule::next_fire(&settings.reconcile, settings.timezone, now)?;
    let second = crate::schedule::next_fire(&settings.reconcile, settings.timezone, first)?;
    let interval = second.signed_duration_since(first);
    let hold = chrono::Duration::from_std(resolve_after).unwrap_or(chrono::Duration::MAX);
    (hold <= interval).then(|| {
        format!(
            "report.email.resolve_after ({}) is not longer than the time between two \
             reconciles ({}): a condition each reconcile judges (an incomplete directory \
             read) that comes and goes every other reconcile is resolved and alerted again \
             each time; set it above the reconcile interval (or \"0s\" to resolve at once)",
            span(hold),
            span(interval)
        )
    })
}

/// The longest time without a fire of any of `schedules`, in the coming week or
/// in the week of one of the year's clock changes (see [`sweeps_too_far_apart`]).
fn longest_gap_in_a_year(
    schedules: &[&Schedule],
    tz: chrono_tz::Tz,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<(chrono::DateTime<chrono::Utc>, chrono::Duration)> {
    std::iter::once(now)
        .chain(crate::schedule::offset_changes(tz, now))
        .filter_map(|from| crate::schedule::longest_gap(schedules, tz, from))
        .max_by_key(|(_, gap)| *gap)
}

/// Okta's delta lists users changed since the cursor, and a deleted user is in no
/// listing: someone deactivated *and* deleted between two sweeps is seen gone only
/// by a full read, a reconcile's (the sweep reads in full only with `app_id`, or
/// when a group of interest changed). With reconciles further apart than
/// `deprovision.sla`, such a leaver keeps access that long, no deadline running.
fn okta_deletions_wait_for_reconciles(
    settings: &DaemonSettings,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    let (from, gap) = longest_gap_in_a_year(&[&settings.reconcile], settings.timezone, now)?;
    let sla = chrono::Duration::from_std(settings.sla).ok()?;
    (gap > sla).then(|| {
        format!(
            "schedule.reconcile: with an Okta directory, a person deactivated and deleted \
             between two sweeps is seen gone only by a reconcile (Okta's delta lists no \
             deleted user), and no reconcile runs for up to {} (from {}), longer than \
             deprovision.sla ({}): such a leaver keeps their access that long before their SLA \
             clock starts; reconcile more often (the default is every 30 minutes, \
             \"*/30 * * * *\"), or set directory.app_id (the sweep then reads the directory \
             whole)",
            span(gap),
            crate::model::clock_time(from, settings.timezone, "%a %H:%M"),
            span(sla)
        )
    })
}

/// `duration` in the configuration's own syntax (`2d16h`, `1h30m`, `45s`).
pub(crate) fn span(duration: chrono::Duration) -> String {
    let mut seconds = duration.num_seconds().max(0);
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            out.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

/// The warning for a secret file that other users of the machine can read, or
/// that others than its owner can change (and so swap the credential), naming the
/// key, the file and how to tighten it; `None` when its mode keeps it to its owner
/// and group, or it cannot be read (reading it reports that).
///
/// Group read is not warned about: systemd writes a `LoadCredential=` file 0400
/// and grants the service's user read through an ACL, which `stat` shows as 0440
/// (the ACL mask takes the group bits), and a group-readable file is also how a
/// secret is shared with the service's group on purpose (root:seatwarden 0640,
/// Kubernetes `fsGroup`). World-readable mounted secrets (0444, Docker Swarm's and
/// Compose's default for a host file of that mode, Kubernetes' 0644) are warned
/// about at every load: the warning says which mode silences it.
#[cfg(unix)]
fn loose_secret_file(key: &str, file: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    // A folder named where the file should be (the credentials folder itself) is
    // refused when it is read; its 0755 is no secret's mode to warn about.
    let metadata = std::fs::metadata(file).ok().filter(|m| m.is_file())?;
    let mode = metadata.permissions().mode() & 0o777;
    let read_by_others = mode & 0o004 != 0;
    let changed_by_others = mode & 0o022 != 0;
    let exposure = match (read_by_others, changed_by_others) {
        (false, false) => return None,
        (true, false) => "can be read by every user of this machine",
        (false, true) => "can be changed by users other than its owner",
        (true, true) => "can be read and changed by every user of this machine",
    };
    Some(format!(
        "{key}: the secret file {} {exposure} (mode {mode:04o}); tighten its mode to silence \
         this: give it to the user seatwarden runs as and chmod 0600 or 0400 (0640 or 0440 \
         when a group the service is in shares it). A container secret: the same on the \
         mounted host file (the image runs as uid 10001), Swarm `mode: 0400` with `uid`, \
         Kubernetes `defaultMode: 0440` with `fsGroup`; systemd credentials pass as they are",
        file.display()
    ))
}

#[cfg(not(unix))]
fn loose_secret_file(_key: &str, _file: &Path) -> Option<String> {
    None
}

/// The warning for a configuration file that holds secrets inline (`keys`) and
/// that every user of the machine can read: the same exposure as a loose secret
/// file, which is warned about, and more likely, as configuration files are
/// usually created 0644. Group read passes, as for secret files.
#[cfg(unix)]
fn loose_config_with_secrets(file: &Path, keys: &[&str]) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let first = keys.first()?;
    let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o777;
    if mode & 0o004 == 0 {
        return None;
    }
    let secret_file = first.rsplit('.').next().unwrap_or(first);
    Some(format!(
        "{}: holds {} inline and can be read by every user of this machine (mode {mode:04o}): \
         move each to its file key (e.g. {secret_file}_file) or an environment variable \
         from a credential, or chmod 0600 (0640 when a group the service is in shares it)",
        file.display(),
        keys.join(", ")
    ))
}

#[cfg(not(unix))]
fn loose_config_with_secrets(_file: &Path, _keys: &[&str]) -> Option<String> {
    None
}

/// The warning for a configuration file that users other than its owner can
/// change (group or world write, as for secret files): whoever changes it can
/// point `workspace.url`, the directory or the SMTP relay at a host of theirs
/// (with `allow_cleartext`, or a `ca_file` of theirs) and receive the
/// credentials, however private the secret files are, or switch the safety
/// limits off.
#[cfg(unix)]
fn config_changed_by_others(file: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o777;
    (mode & 0o022 != 0).then(|| {
        format!(
            "{}: can be changed by users other than its owner (mode {mode:04o}): whoever \
             changes it can send the credentials to a server of theirs (workspace.url, \
             directory.url, report.email.smtp_url) or lift the safety limits; chmod go-w it \
             (0644, or 0640 with secrets inline)",
            file.display()
        )
    })
}

#[cfg(not(unix))]
fn config_changed_by_others(_file: &Path) -> Option<String> {
    None
}

/// A quiet period: alerts are judged again after every daemon job (the retry job
/// runs every minute), so a shorter one would repeat each open alert about that
/// often.
const MIN_QUIET_PERIOD: Duration = Duration::from_secs(15 * 60);

/// How long runs are kept: the rolling 24 h safety limits count the actions of the
/// runs still stored, so a shorter retention would let a second day's worth through.
const MIN_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// `text` as a duration no shorter than `min` (`why` says what needs it).
fn parse_at_least(
    text: &str,
    min: Duration,
    min_text: &str,
    why: &str,
) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < min {
        return Err(format!(
            "{:?} is shorter than {min_text}, the least it can be: {why}",
            text.trim()
        ));
    }
    Ok(duration)
}

fn parse_quiet_period(text: &str) -> Result<Duration, String> {
    parse_at_least(
        text,
        MIN_QUIET_PERIOD,
        "15m",
        "alerts are judged again after every daemon job, so a shorter period would repeat \
         each open alert every minute",
    )
}

/// Parses durations like `30s`, `10m`, `1h`, `1h30m`, `500ms`, `30d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let invalid = || format!("invalid duration {text:?}; use e.g. 30s, 10m, 1h30m, 7d");
    if text.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(char::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            "d" => Duration::from_secs(value.saturating_mul(86_400)),
            _ => return Err(invalid()),
        };
        total = total.saturating_add(part);
    }
    // Dates are computed from these (`now - retention`, `now + sla`): beyond
    // chrono's range such arithmetic panics, so a typo like 100000000d must be an
    // error here, not a job that dies at its first fire.
    if total > MAX_DURATION {
        return Err(format!(
            "duration {text:?} is longer than 100 years (36500d)"
        ));
    }
    Ok(total)
}

/// The most requests a connector keeps in flight (`max_concurrency`). No
/// provider serves more to one client (Okta's whole org allows 75), and the
/// semaphore that bounds them panics past 2^61 permits: such a value must be an
/// error at load, not a run that dies building its connector.
const MAX_CONCURRENCY: usize = 1000;

/// The values a numeric key takes, as every error about its value says them:
/// one out of range, of the wrong type, or a fraction where a whole number
/// belongs. `None` for a key that is not numeric. `ldap`: whether the directory
/// is LDAP, whose `page_size` goes out as a signed 32-bit number; `None` where
/// that is not known yet (the value did not even load), which says both.
fn allowed_range(key: &str, ldap: Option<bool>) -> Option<String> {
    const LDAP_MAX_PAGE: i32 = i32::MAX;
    let whole = |min: u64, max: u64| format!("a whole number from {min} to {max}");
    let u32_max = u64::from(u32::MAX);
    let max_concurrency = MAX_CONCURRENCY as u64;
    let max_retries = MAX_RETRIES as u64;
    Some(match key {
        "workspace.page_size" | "workspace.requests_per_second" => whole(1, u32_max),
        "workspace.max_concurrency" | "directory.max_concurrency" => whole(1, max_concurrency),
        "workspace.retries" => whole(0, max_retries),
        "directory.requests_per_second" => format!("{} (0: no limit)", whole(0, u32_max)),
        "directory.page_size" => match ldap {
            Some(true) => format!("a whole number from 1 to {LDAP_MAX_PAGE}"),
            Some(false) => whole(1, u32_max),
            None => format!("{} ({LDAP_MAX_PAGE} at most from LDAP)", whole(1, u32_max)),
        },
        "safety.circuit.window" => "a whole number, 1 or more".to_owned(),
        "safety.min_population_for_percent" => "a whole number, 0 or more".to_owned(),
        "safety.circuit.failure_ratio" => "a number above 0 and at most 1, such as 0.5".to_owned(),
        key if key.starts_with("safety.max_") && key.contains("_percent") => {
            "a number from 0 to 100, such as 5 or 2.5".to_owned()
        }
        key if key.starts_with("safety.max_") => "a whole number, 0 or more".to_owned(),
        _ => return None,
    })
}

/// `message`, about the value of `key`, with the values `key` takes in place of
/// the bare type: "expected a whole number, found the number 99999999999" told
/// someone who wrote a whole number nothing.
fn with_allowed_range(key: &str, message: String, ldap: Option<bool>) -> String {
    let Some(range) = allowed_range(key, ldap) else {
        return message;
    };
    if let Some(found) = message
        .strip_prefix("expected ")
        .and_then(|rest| rest.split_once(", found ").map(|(_, found)| found))
    {
        return format!("expected {range}, found {found}");
    }
    if message.ends_with("is not a whole number (it would be rounded)") {
        return format!("{message}: write {range}");
    }
    message
}

fn too_concurrent(key: &str, value: usize) -> String {
    out_of_range(key, value, None) + " (requests in flight at once)"
}

/// "must be a whole number from 1 to 4294967295, not 0": a value of `key`
/// outside [`allowed_range`].
fn out_of_range(key: &str, value: impl std::fmt::Display, ldap: Option<bool>) -> String {
    let range = allowed_range(key, ldap).unwrap_or_else(|| "another value".to_owned());
    format!("must be {range}, not {value}")
}

/// The most retries of one workspace request (`workspace.retries`): with the
/// default delay the 30th already comes about 12 minutes after the first attempt,
/// as the waits reach their 30 s ceiling by the 9th.
const MAX_RETRIES: usize = 30;

/// The longest duration any key accepts.
const MAX_DURATION: Duration = Duration::from_secs(36_500 * 86_400);

/// The deepest an LDAP filter of the configuration (`directory.user_filter`,
/// `group_filter`, `disabled_filter`) may nest its parentheses. ldap3 parses a
/// filter recursively, a stack frame or more per level: a few thousand levels
/// (a generated filter gone wrong) overflowed the stack of the worker thread
/// that searched with it, an abort no error handling catches, at every start of
/// the daemon; a few more, the load of the configuration itself. A real filter
/// nests a handful deep.
const MAX_LDAP_FILTER_DEPTH: usize = 64;

/// How deep `filter` nests its parentheses. A parenthesis inside a value is
/// written escaped (`\28`, RFC 4515), so every one counted is the filter's.
fn ldap_filter_depth(filter: &str) -> usize {
    let mut depth: usize = 0;
    let mut deepest = 0;
    for byte in filter.bytes() {
        match byte {
            b'(' => {
                depth = depth.saturating_add(1);
                deepest = deepest.max(depth);
            }
            b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::collections::HashMap;

    use super::*;

    /// A key is named whole: not as the start of a longer key, nor as the end of
    /// one; a full stop after it ends a sentence.
    #[test]
    fn a_message_names_a_key_only_whole() {
        let text = "directory.token_file /x is empty. Check policy.scope_groups.";
        assert!(names_key(text, "directory.token_file"));
        assert!(names_key(text, "policy.scope_groups"));
        assert!(!names_key(text, "directory.token"));
        assert!(!names_key(text, "token_file"));
        assert!(!names_key("directory.token.x", "directory.token"));
    }

    /// A national cloud's graph_url with the global sign-in left as the default
    /// (or the other way round) is warned about, naming the URL to set; matching
    /// clouds, and hosts that are no Microsoft cloud's, are not.
    #[test]
    fn entra_urls_of_different_microsoft_clouds_are_warned_about() {
        let url = |u: &str| url::Url::parse(u).unwrap();
        let us_graph = url("https://graph.microsoft.us");
        let warning = entra_clouds_differ(Some(&us_graph), None).unwrap();
        assert!(
            warning.starts_with("directory.login_url (unset)")
                && warning.contains("US Government")
                && warning.contains("\"https://login.microsoftonline.us\""),
            "{warning}"
        );
        let cn_login = url("https://login.chinacloudapi.cn");
        let warning = entra_clouds_differ(None, Some(&cn_login)).unwrap();
        assert!(
            warning.starts_with("directory.graph_url (unset)")
                && warning.contains("\"https://microsoftgraph.chinacloudapi.cn\""),
            "{warning}"
        );
        let dod = url("https://dod-graph.microsoft.us/");
        let us_login = url("https://login.microsoftonline.us/");
        assert_eq!(entra_clouds_differ(Some(&dod), Some(&us_login)), None);
        assert_eq!(entra_clouds_differ(None, None), None);
        let stand_in = url("http://127.0.0.1:8080");
        assert_eq!(entra_clouds_differ(Some(&stand_in), None), None);
        assert_eq!(entra_clouds_differ(Some(&stand_in), Some(&us_login)), None);
        let global = url("https://login.microsoftonline.com");
        assert!(entra_clouds_differ(Some(&us_graph), Some(&global)).is_some());
        // `check-config` and every load say it.
        let entra = |urls: &str| {
            load_directory(&format!(
                "kind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\n\
                 client_secret = \"s\"\n{urls}"
            ))
            .unwrap()
            .warnings()
            .into_iter()
            .filter(|w| w.contains("directory.login_url"))
            .count()
        };
        assert_eq!(entra("graph_url = \"https://graph.microsoft.us\""), 1);
        assert_eq!(
            entra(
                "graph_url = \"https://graph.microsoft.us\"\n\
                 login_url = \"https://login.microsoftonline.us\""
            ),
            0
        );
    }

    const BASE: &str = r#"
[directory]
kind = "file"
path = "directory.json"

[workspace]
url = "https://scim.example.com/scim/v2"
token = "s3cr3t-token-value"
"#;

    /// `BASE` with `workspace` keys and further sections appended, loaded with
    /// `env` as the environment.
    fn load(workspace: &str, rest: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seatwarden.toml");
        std::fs::write(&path, format!("{BASE}{workspace}\n{rest}")).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::load_with_env(&path, Some(env)).map_err(|e| e.to_string())
    }

    /// A numeric key's value out of its range, or not a number, said "expected a
    /// whole number" (to someone who wrote 99999999999) or "must be at least 1"
    /// without the upper end: each now says the values the key takes, naming the
    /// key and the file (or the variable), for each shape a value goes wrong in.
    #[test]
    fn a_numeric_key_out_of_range_says_the_values_it_takes() {
        let cases: [(&str, &str, &str); 13] = [
            // (key = value, under [workspace] or its own section; what it says)
            (
                "page_size = 99999999999",
                "",
                "key `workspace.page_size`: expected a whole number from 1 to 4294967295, \
                 found the number 99999999999",
            ),
            (
                "page_size = 0",
                "",
                "key `workspace.page_size`: must be a whole number from 1 to 4294967295, not 0",
            ),
            (
                "page_size = -5",
                "",
                "key `workspace.page_size`: expected a whole number from 1 to 4294967295, \
                 found the number -5",
            ),
            (
                "page_size = \"ten\"",
                "",
                "key `workspace.page_size`: expected a whole number from 1 to 4294967295, \
                 found the text \"ten\"",
            ),
            (
                "page_size = 2.5",
                "",
                "key `workspace.page_size`: 2.5 is not a whole number (it would be rounded): \
                 write a whole number from 1 to 4294967295",
            ),
            (
                "max_concurrency = 0",
                "",
                "key `workspace.max_concurrency`: must be a whole number from 1 to 1000, not 0 \
                 (requests in flight at once)",
            ),
            (
                "max_concurrency = 5000",
                "",
                "key `workspace.max_concurrency`: must be a whole number from 1 to 1000, not \
                 5000 (requests in flight at once)",
            ),
            (
                "requests_per_second = -1",
                "",
                "key `workspace.requests_per_second`: expected a whole number from 1 to \
                 4294967295, found the number -1",
            ),
            (
                "retries = 31",
                "",
                "key `workspace.retries`: must be a whole number from 0 to 30, not 31: past 30",
            ),
            (
                "retries = \"many\"",
                "",
                "key `workspace.retries`: expected a whole number from 0 to 30, found the text",
            ),
            (
                "",
                "[safety.circuit]\nwindow = 0",
                "key `safety.circuit.window`: must be a whole number, 1 or more, not 0",
            ),
            (
                "",
                "[safety]\nmax_deprovisions = -3",
                "key `safety.max_deprovisions`: expected a whole number, 0 or more, found the \
                 number -3",
            ),
            (
                "",
                "[safety]\nmax_deprovision_percent = \"5%\"",
                "key `safety.max_deprovision_percent`: expected a number from 0 to 100, such as \
                 5 or 2.5, found the text \"5%\"",
            ),
        ];
        for (workspace, rest, said) in cases {
            let error = load(workspace, rest, &[]).unwrap_err();
            assert!(
                error.contains("seatwarden.toml: ") && error.contains(said),
                "{workspace}{rest}: {error}"
            );
        }
        // From a variable, the variable is named.
        let error = load(
            "",
            "",
            &[("SEATWARDEN__WORKSPACE__PAGE_SIZE", "99999999999")],
        )
        .unwrap_err();
        assert!(
            error.contains("SEATWARDEN__WORKSPACE__PAGE_SIZE")
                && error.contains("expected a whole number from 1 to 4294967295"),
            "{error}"
        );
    }

    /// A directory's `page_size`: LDAP sends it as a signed 32-bit number, the
    /// others take any 32-bit one; each says its own range.
    #[test]
    fn a_directory_page_size_out_of_range_says_the_directorys_range() {
        let ldap = "kind = \"ldap\"\nurl = \"ldaps://dc.example.com\"\n\
                    bind_dn = \"cn=sw,dc=example,dc=com\"\nbind_password = \"p\"\n\
                    base_dn = \"dc=example,dc=com\"";
        let scim = "kind = \"scim\"\nurl = \"https://idp.example.com/scim/v2\"\ntoken = \"t\"";
        for (directory, page_size, said) in [
            (
                ldap,
                "3000000000",
                "must be a whole number from 1 to 2147483647, not 3000000000",
            ),
            (
                ldap,
                "-1",
                "expected a whole number from 1 to 2147483647, found the number -1",
            ),
            (
                ldap,
                "0",
                "must be a whole number from 1 to 2147483647, not 0",
            ),
            (
                scim,
                "0",
                "must be a whole number from 1 to 4294967295, not 0",
            ),
            (
                scim,
                "99999999999",
                "expected a whole number from 1 to 4294967295, found the number 99999999999",
            ),
            (
                scim,
                "\"abc\"",
                "expected a whole number from 1 to 4294967295, found the text \"abc\"",
            ),
        ] {
            let error =
                load_directory(&format!("{directory}\npage_size = {page_size}")).unwrap_err();
            assert!(
                error.contains("key `directory.page_size`: ") && error.contains(said),
                "{page_size}: {error}"
            );
        }
    }

    /// A concurrency past what a tokio semaphore holds (2^61 - 1 permits)
    /// panicked the connector's construction, at the first run: each is refused
    /// at load, naming its key, as are any past a sane bound.
    #[test]
    fn a_huge_max_concurrency_is_refused_naming_the_key() {
        let huge = "max_concurrency = 9223372036854775807";
        let error = load(huge, "", &[]).unwrap_err();
        assert!(
            error.contains("workspace.max_concurrency") && error.contains("from 1 to 1000"),
            "{error}"
        );
        let error = load(
            "",
            "",
            &[("SEATWARDEN__WORKSPACE__MAX_CONCURRENCY", "1001")],
        )
        .unwrap_err();
        assert!(error.contains("workspace.max_concurrency"), "{error}");
        assert_eq!(
            load("max_concurrency = 1000", "", &[])
                .unwrap()
                .workspace
                .max_concurrency,
            1000
        );
        for directory in [
            "kind = \"scim\"\nurl = \"https://idp.example.com/scim/v2\"\ntoken = \"t\"",
            "kind = \"okta\"\nurl = \"https://acme.okta.com\"\ntoken = \"t\"",
            "kind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"",
        ] {
            let error = load_directory(&format!("{directory}\n{huge}")).unwrap_err();
            assert!(
                error.contains("directory.max_concurrency") && error.contains("from 1 to 1000"),
                "{directory}: {error}"
            );
        }
    }

    /// An exception until 9999-12-31 (a "for good" people write) ended in the
    /// year 10000, and the ledger stored that end (and its due time, an SLA
    /// later) as `+10000-…`, which no read of the row takes back: every sweep
    /// failed on the state database from then on. Refused at load, naming the
    /// key and what to use instead.
    #[test]
    fn an_exception_ending_past_the_year_9000_is_refused_naming_the_key() {
        let exception = |until: &str| {
            load(
                "",
                &format!(
                    "[[safety.exceptions]]\nuser_name = \"kim@example.com\"\n\
                     until = \"{until}\"\nreason = \"INC-1\"\n"
                ),
                &[],
            )
        };
        for until in [
            "9999-12-31",
            "9999-12-31T23:59:59Z",
            "9000-01-01T00:00:01",
            "+10000-01-01",
        ] {
            let error = exception(until).unwrap_err();
            assert!(
                error.contains("safety.exceptions[0].until")
                    && error.contains("safety.protected")
                    && error.contains("9000"),
                "{until}: {error}"
            );
        }
        let kept = exception("8999-12-31").unwrap().exceptions().unwrap();
        assert_eq!(kept[0].until.to_rfc3339(), "9000-01-01T00:00:00+00:00");
    }

    /// West of UTC the last day before 9000-01-01 ends after 9000-01-01T00:00Z
    /// (at the zone's midnight): `until = "8999-12-31"` was refused as ending
    /// after 9000-01-01. The bound is that midnight on the report clock, so the
    /// date is kept in every zone and a second past it is still refused.
    #[test]
    fn the_last_day_before_the_year_9000_is_an_exception_end_in_every_zone() {
        let exception = |zone: &str, until: &str| {
            load(
                "",
                &format!(
                    "[report]\ntimezone = \"{zone}\"\n\
                     [[safety.exceptions]]\nuser_name = \"kim@example.com\"\n\
                     until = \"{until}\"\nreason = \"INC-1\"\n"
                ),
                &[],
            )
        };
        for zone in [
            "Pacific/Pago_Pago",
            "America/Los_Angeles",
            "UTC",
            "Pacific/Kiritimati",
        ] {
            let kept = exception(zone, "8999-12-31")
                .and_then(|config| config.exceptions().map_err(|e| e.to_string()));
            assert!(kept.is_ok(), "{zone}: {kept:?}");
            for until in ["9000-01-01", "9000-01-01T00:00:01"] {
                let error = exception(zone, until).unwrap_err();
                assert!(
                    error.contains("safety.exceptions[0].until")
                        && error.contains("seatwarden.toml")
                        && error.contains("9000-01-01"),
                    "{zone} {until}: {error}"
                );
            }
        }
    }

    /// `[directory]` with `keys` in place of `BASE`'s.
    fn load_directory(keys: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seatwarden.toml");
        let workspace = BASE.split_once("[workspace]").unwrap().1;
        std::fs::write(
            &path,
            format!("[directory]\n{keys}\n[workspace]{workspace}"),
        )
        .unwrap();
        Config::load_with_env(&path, Some(HashMap::new())).map_err(|e| e.to_string())
    }

    /// `schedule.dry_run` from the file or from `SEATWARDEN__SCHEDULE__DRY_RUN`
    /// (a container's way); off unless set; text in the file is refused, naming
    /// the key.
    #[test]
    fn schedule_dry_run_comes_from_the_file_or_the_environment() {
        let dry_run = |rest: &str, env: &[(&str, &str)]| {
            load("", rest, env)
                .and_then(|c| c.daemon_settings().map_err(|e| e.to_string()))
                .map(|s| s.dry_run)
        };
        assert_eq!(dry_run("", &[]), Ok(false));
        assert_eq!(dry_run("[schedule]\ndry_run = true\n", &[]), Ok(true));
        assert_eq!(
            dry_run("", &[("SEATWARDEN__SCHEDULE__DRY_RUN", "true")]),
            Ok(true)
        );
        assert_eq!(
            dry_run(
                "[schedule]\ndry_run = true\n",
                &[("SEATWARDEN__SCHEDULE__DRY_RUN", "false")]
            ),
            Ok(false)
        );
        let error = dry_run("[schedule]\ndry_run = \"yes\"\n", &[]).unwrap_err();
        assert!(error.contains("schedule.dry_run"), "{error}");
    }

    #[test]
    fn an_unknown_directory_key_names_kind_among_the_accepted_keys() {
        let error =
            load_directory("kind = \"file\"\npath = \"d.json\"\nkindd = \"json\"").unwrap_err();
        assert!(
            error.ends_with(
                "seatwarden.toml: key `directory.kindd`: unknown field `kindd`, expected one of \
                 `kind`, `path` (the keys of a `kind = \"file\"` directory)"
            ),
            "{error}"
        );
        let error = load_directory(
            "kind = \"okta\"\nurl = \"https://acme.okta.com\"\ntoken = \"t\"\ntokn = \"t\"",
        )
        .unwrap_err();
        assert!(
            error.contains(
                "key `directory.tokn`: unknown field `tokn`, expected one of `kind`, `url`, \
                 `token`, `token_file`,"
            ) && error.contains("(the keys of a `kind = \"okta\"` directory)"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_directory_kind_names_the_kinds() {
        let error = load_directory("kindd = \"file\"\npath = \"d.json\"").unwrap_err();
        assert!(
            error.ends_with(
                "seatwarden.toml: key `directory.kind`: missing: the directory source, one of \
                 `file`, `okta`, `entra`, `ldap`, `scim`"
            ),
            "{error}"
        );
        // Any other missing key is named as a key too.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seatwarden.toml");
        std::fs::write(
            &path,
            "[directory]\nkind = \"file\"\npath = \"d.json\"\n[workspace]\ntoken = \"t\"\n",
        )
        .unwrap();
        let error = Config::load_with_env(&path, Some(HashMap::new()))
            .unwrap_err()
            .to_string();
        assert!(
            error.ends_with(
                "seatwarden.toml: key `workspace.url`: missing: the workspace's SCIM base URL, \
                 up to and including the version, such as url = \
                 \"https://www.taskade.com/scim/v2\""
            ),
            "{error}"
        );
        // The list is serde's own, as it words a kind it does not know.
        let error = load_directory("kind = \"json\"\npath = \"d.json\"").unwrap_err();
        let kinds: Vec<String> = DIRECTORY_KINDS.iter().map(|k| format!("`{k}`")).collect();
        assert!(
            error.contains(&format!("expected one of {}", kinds.join(", "))),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_section_is_named_as_a_key() {
        let error = load("", "[reprt]\nname = \"x\"", &[]).unwrap_err();
        assert!(
            error.contains(
                "seatwarden.toml: key `reprt`: unknown field `reprt`, expected one of `directory`,"
            ),
            "{error}"
        );
        let error = load("", "[state]\npth = \"x\"", &[]).unwrap_err();
        assert!(
            error
                .contains("seatwarden.toml: key `state.pth`: unknown field `pth`, expected `path`"),
            "{error}"
        );
    }

    #[test]
    fn workspace_retries_are_configured_and_a_zero_delay_refused() {
        let defaults = load("", "", &[]).unwrap().scim_settings().unwrap().retry;
        assert_eq!(defaults, RetryPolicy::default());
        let quick = load(
            "",
            "",
            &[
                ("SEATWARDEN__WORKSPACE__RETRIES", "2"),
                ("SEATWARDEN__WORKSPACE__RETRY_DELAY", "10ms"),
            ],
        )
        .unwrap()
        .scim_settings()
        .unwrap()
        .retry;
        assert_eq!(
            (quick.max_retries, quick.min_delay),
            (2, Duration::from_millis(10))
        );
        assert_eq!(quick.max_delay, defaults.max_delay);
        let error = load("retry_delay = \"0s\"", "", &[]).unwrap_err();
        assert!(
            error.contains("workspace.retry_delay") && error.contains("longer than zero"),
            "{error}"
        );
        // Retrying for hours (or, at 2^63, for ever) is no setting anyone wants.
        assert_eq!(load("retries = 30", "", &[]).unwrap().workspace.retries, 30);
        for too_many in ["31", "9223372036854775807"] {
            let error = load("", "", &[("SEATWARDEN__WORKSPACE__RETRIES", too_many)]).unwrap_err();
            assert!(
                error.contains("workspace.retries") && error.contains("from 0 to 30"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_resolution_hold_no_longer_than_a_reconcile_interval_is_warned_about() {
        let warned = |email: &str, schedule: &str| {
            load(
                "",
                &format!(
                    "{schedule}[report.email]\nsmtp_url = \"smtp://127.0.0.1:25\"\n\
                     from = \"sw@example.com\"\nto = [\"sec@example.com\"]\n{email}"
                ),
                &[],
            )
            .unwrap()
            .warnings()
            .into_iter()
            .find(|w| w.starts_with("report.email.resolve_after"))
        };
        assert_eq!(warned("", ""), None, "1h, reconciles every 30 minutes");
        assert_eq!(warned("resolve_after = \"0s\"\n", ""), None);
        let warning = warned("resolve_after = \"30m\"\n", "").unwrap();
        assert!(
            warning.contains("(30m) is not longer than the time between two reconciles (30m)"),
            "{warning}"
        );
        let hourly = "[schedule]\nreconcile = \"@hourly\"\n";
        assert!(warned("", hourly).is_some());
        assert_eq!(warned("resolve_after = \"90m\"\n", hourly), None);
    }

    /// A percentage that rounds to a per-run limit of 0 at the smallest
    /// workspaces it applies to is warned about, naming the population from which
    /// it allows one; the defaults (5% from 100 accounts) are not.
    #[test]
    fn a_percentage_allowing_nothing_at_the_minimum_population_is_warned_about() {
        let warned = |safety: &str, key: &str| {
            load("", &format!("[safety]\n{safety}"), &[])
                .unwrap()
                .warnings()
                .into_iter()
                .find(|w| w.starts_with(&format!("safety.{key} ")))
        };
        assert_eq!(warned("", "max_deprovision_percent"), None);
        let small = "min_population_for_percent = 3\n";
        let warning = warned(small, "max_deprovision_percent").unwrap();
        assert!(
            warning.contains(
                "is less than one of 3 to 19 managed accounts: with \
                 safety.min_population_for_percent = 3, a workspace of that size has a per-run \
                 limit of 0 deprovisions, and each waits for `seatwarden approve`; set \
                 min_population_for_percent to 20"
            ),
            "{warning}"
        );
        // 10% of 10 is one; 3% needs 34.
        let ten = "min_population_for_percent = 10\nmax_deprovision_percent = 10\n";
        assert_eq!(warned(ten, "max_deprovision_percent"), None);
        let three = "min_population_for_percent = 10\nmax_deprovision_percent = 3\n";
        assert!(
            warned(three, "max_deprovision_percent")
                .unwrap()
                .contains("of 10 to 33 managed accounts"),
        );
        let none = warned(
            "max_role_downgrade_percent = 0\n",
            "max_role_downgrade_percent",
        );
        assert!(
            none.unwrap()
                .contains("from safety.min_population_for_percent = 100 managed accounts on"),
        );
        // A count of 0 says it itself.
        let counted = "min_population_for_percent = 3\nmax_deprovisions = 0\n";
        assert_eq!(warned(counted, "max_deprovision_percent"), None);
    }

    /// The 24 h percentages: twice the per-run ones by default (as the 24 h
    /// counts are twice the per-run counts), each refused outside 0 to 100
    /// naming its key and file, read from the environment too, and warned about
    /// when it allows nothing at the minimum population, as the per-run ones are.
    #[test]
    fn the_24h_percentages_default_to_twice_the_per_run_ones_and_are_validated() {
        let settings = load("", "", &[]).unwrap().guard_settings();
        for class in crate::model::ActionClass::ALL {
            let limits = settings.limits(class);
            assert_eq!(limits.percent_per_day, 2.0 * limits.percent, "{class}");
        }
        let config = load("", "", &[]).unwrap();
        let s = &config.safety;
        assert_eq!(
            [
                s.max_deprovision_percent_per_day,
                s.max_membership_removal_percent_per_day,
                s.max_role_downgrade_percent_per_day,
                s.max_deletion_percent_per_day,
                s.max_rename_percent_per_day,
            ],
            [10.0, 20.0, 10.0, 10.0, 10.0]
        );
        for class in crate::model::ActionClass::ALL {
            let key = format!("max_{class}_percent_per_day");
            for bad in ["100.5", "-1"] {
                let error = load("", &format!("[safety]\n{key} = {bad}\n"), &[]).unwrap_err();
                assert!(
                    error.contains(&format!(
                        "seatwarden.toml: key `safety.{key}`: must be between 0 and 100"
                    )),
                    "{error}"
                );
            }
            let set = load("", &format!("[safety]\n{key} = 7.5\n"), &[]).unwrap();
            assert_eq!(set.guard_settings().limits(class).percent_per_day, 7.5);
        }
        let from_env = load(
            "",
            "",
            &[("SEATWARDEN__SAFETY__MAX_RENAME_PERCENT_PER_DAY", "2.5")],
        )
        .unwrap();
        assert_eq!(from_env.safety.max_rename_percent_per_day, 2.5);

        let warned = |safety: &str, key: &str| {
            load("", &format!("[safety]\n{safety}"), &[])
                .unwrap()
                .warnings()
                .into_iter()
                .find(|w| w.starts_with(&format!("safety.{key} ")))
        };
        assert_eq!(warned("", "max_deprovision_percent_per_day"), None);
        // 10% of 3 to 9 is less than one; 5% per run of them too, said apart.
        let small = "min_population_for_percent = 3\n";
        let warning = warned(small, "max_deprovision_percent_per_day").unwrap();
        assert!(
            warning.contains(
                "= 10 is less than one of 3 to 9 managed accounts: with \
                 safety.min_population_for_percent = 3, a workspace of that size has a 24 h \
                 limit of 0 deprovisions, and each waits for `seatwarden approve`; set \
                 min_population_for_percent to 10"
            ),
            "{warning}"
        );
        assert!(warned(small, "max_deprovision_percent").is_some());
        let ten = "min_population_for_percent = 10\nmax_deprovision_percent = 10\n";
        assert_eq!(warned(ten, "max_deprovision_percent_per_day"), None);
        let none = warned(
            "max_rename_percent_per_day = 0\n",
            "max_rename_percent_per_day",
        );
        assert!(
            none.unwrap()
                .contains("managed accounts on, the 24 h limit is 0 renames"),
        );
        // A count of 0 says it itself.
        let counted = "min_population_for_percent = 3\nmax_deprovisions_per_day = 0\n";
        assert_eq!(warned(counted, "max_deprovision_percent_per_day"), None);
    }

    /// A 24 h limit below the per-run limit of its class makes the per-run one
    /// unreachable: almost always a typo, or the two read the wrong way round.
    /// Warned about (not refused), naming both keys, their values and the
    /// file, for the counts and the percentages of every class; a 24 h limit
    /// of 0 ("nothing without a human") and the defaults are not.
    #[test]
    fn a_24h_limit_below_the_per_run_one_is_warned_about() {
        let warnings = |safety: &str, env: &[(&str, &str)]| {
            let config = load("", &format!("[safety]\n{safety}"), env).unwrap();
            let file = config.source.display().to_string();
            let found: Vec<String> = config
                .warnings()
                .into_iter()
                .filter(|w| w.contains("can never be reached"))
                .collect();
            (found, file)
        };
        assert_eq!(warnings("", &[]).0, Vec::<String>::new());
        let (found, file) = warnings(
            "max_deprovisions = 30\nmax_deprovisions_per_day = 20\n",
            &[],
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with(&format!(
                "safety.max_deprovisions_per_day = 20 is below safety.max_deprovisions = 30 in \
                 {file}: the 24 h limit is met first, so the per-run limit can never be reached; \
                 set max_deprovisions_per_day to 30 or more, or max_deprovisions to 20 or less"
            )),
            "{}",
            found[0]
        );
        // The per-run value raised alone, past the 24 h default.
        let (found, _) = warnings("max_role_downgrade_percent = 15\n", &[]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with(
                "safety.max_role_downgrade_percent_per_day = 10 (the default) is below \
                 safety.max_role_downgrade_percent = 15 in "
            ),
            "{}",
            found[0]
        );
        for class in crate::model::ActionClass::ALL {
            for (run, day) in [
                (format!("max_{class}s"), format!("max_{class}s_per_day")),
                (
                    format!("max_{class}_percent"),
                    format!("max_{class}_percent_per_day"),
                ),
            ] {
                let (found, _) = warnings(&format!("{run} = 8\n{day} = 4\n"), &[]);
                assert_eq!(found.len(), 1, "{run}: {found:?}");
                assert!(
                    found[0].starts_with(&format!("safety.{day} = 4 is below safety.{run} = 8")),
                    "{}",
                    found[0]
                );
                let (equal, _) = warnings(&format!("{run} = 8\n{day} = 8\n"), &[]);
                assert_eq!(equal, Vec::<String>::new(), "{run}");
                let (stopped, _) = warnings(&format!("{run} = 8\n{day} = 0\n"), &[]);
                assert_eq!(stopped, Vec::<String>::new(), "{run}");
            }
        }
        // A value from the environment names its variable.
        let (found, _) = warnings(
            "max_renames = 10\n",
            &[("SEATWARDEN__SAFETY__MAX_RENAMES_PER_DAY", "5")],
        );
        assert!(
            found[0].starts_with(
                "safety.max_renames_per_day = 5 (environment variable \
                 SEATWARDEN__SAFETY__MAX_RENAMES_PER_DAY) is below safety.max_renames = 10 in "
            ),
            "{}",
            found[0]
        );
    }

    /// The warning says "(the default)" only of a key nobody set: a value the
    /// file writes is the file's, even when it equals the default (the person
    /// who wrote it goes looking in the file, not in the documentation).
    #[test]
    fn a_24h_limit_written_with_the_default_value_is_not_called_the_default() {
        let warned = |safety: &str| {
            load("", &format!("[safety]\n{safety}"), &[])
                .unwrap()
                .warnings()
                .into_iter()
                .find(|w| w.contains("can never be reached"))
                .unwrap_or_else(|| panic!("no warning for {safety:?}"))
        };
        let written =
            warned("max_role_downgrade_percent = 15\nmax_role_downgrade_percent_per_day = 10\n");
        assert!(
            written.starts_with(
                "safety.max_role_downgrade_percent_per_day = 10 is below \
                 safety.max_role_downgrade_percent = 15 in "
            ),
            "{written}"
        );
        let unset = warned("max_role_downgrade_percent = 15\n");
        assert!(
            unset.starts_with("safety.max_role_downgrade_percent_per_day = 10 (the default) is"),
            "{unset}"
        );
    }

    #[test]
    fn a_reconcile_time_limit_not_under_the_sla_is_warned_about() {
        let warned = |rest: &str| {
            load("", rest, &[])
                .unwrap()
                .warnings()
                .into_iter()
                .find(|w| w.starts_with("schedule.reconcile_max_duration"))
        };
        assert_eq!(warned(""), None);
        assert_eq!(
            warned("[schedule]\nreconcile_max_duration = \"20m\"\n"),
            None
        );
        let warning = warned("[schedule]\nreconcile_max_duration = \"2h\"\n").unwrap();
        assert!(
            warning.contains("(2h) is not shorter than deprovision.sla (1h)"),
            "{warning}"
        );
    }

    #[test]
    fn sweeps_further_apart_than_the_sla_are_warned_about_with_the_gap() {
        use chrono::TimeZone;
        let wednesday = chrono::Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap();
        let defaults = load("", "", &[]).unwrap();
        assert_eq!(
            sweeps_too_far_apart(&defaults.daemon_settings().unwrap(), wednesday),
            None
        );
        let business_hours = load(
            "",
            "[schedule]\ntimezone = \"Europe/Berlin\"\nsweep = \"0 9-17 * * 1-5\"\n\
             reconcile = \"30 12 * * *\"\n[deprovision]\nsla = \"4h\"\n",
            &[],
        )
        .unwrap();
        let warning =
            sweeps_too_far_apart(&business_hours.daemon_settings().unwrap(), wednesday).unwrap();
        // Friday 17:00, then only the daily reconcile until Monday 09:00: the
        // longest gap is Saturday's 12:30 to Sunday's.
        assert!(
            warning.contains("for up to 1d (from Sat 12:30 +01:00 (CET))")
                && warning.contains("deprovision.sla (4h)"),
            "{warning}"
        );
        let within = load(
            "",
            "[schedule]\nsweep = \"0 * * * *\"\n[deprovision]\nsla = \"1h\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            sweeps_too_far_apart(&within.daemon_settings().unwrap(), wednesday),
            None
        );
    }

    /// Lord Howe Island moves its clocks by half an hour: an hourly sweep there
    /// leaves 90 minutes without one on both change days, past a one-hour SLA.
    /// The warning must not depend on whether `check-config` happens to run in
    /// the week of a change; New York's hourly sweep stays within the hour.
    #[test]
    fn a_gap_only_a_clock_change_makes_is_warned_about_in_any_week() {
        use chrono::TimeZone;
        let june = chrono::Utc.with_ymd_and_hms(2026, 6, 17, 12, 0, 0).unwrap();
        let hourly = |zone: &str| {
            load(
                "",
                &format!(
                    "[schedule]\ntimezone = \"{zone}\"\nsweep = \"0 * * * *\"\n\
                     reconcile = \"0 3 * * *\"\n[deprovision]\nsla = \"1h\"\n"
                ),
                &[],
            )
            .unwrap()
            .daemon_settings()
            .unwrap()
        };
        let warning = sweeps_too_far_apart(&hourly("Australia/Lord_Howe"), june).unwrap();
        assert!(
            warning.contains("for up to 1h30m") && warning.contains("deprovision.sla (1h)"),
            "{warning}"
        );
        assert_eq!(
            sweeps_too_far_apart(&hourly("America/New_York"), june),
            None
        );
        assert_eq!(
            sweeps_too_far_apart(&hourly("Pacific/Kiritimati"), june),
            None
        );
    }

    /// An Okta delta cannot see someone deactivated and deleted between two
    /// sweeps; only a reconcile does. A daily reconcile with a one-hour SLA is
    /// warned about, naming the gap; the default half-hourly one, and an Okta
    /// directory read whole at every sweep (`app_id`), are not; nor is a file.
    #[test]
    fn okta_deletions_seen_only_by_rare_reconciles_are_warned_about() {
        let okta = |app_id: &str, reconcile: &str| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("seatwarden.toml");
            let workspace = BASE.split_once("[workspace]").unwrap().1;
            std::fs::write(
                &path,
                format!(
                    "[directory]\nkind = \"okta\"\nurl = \"https://acme.okta.com\"\n\
                     token = \"t0ken-value\"\n{app_id}\n[workspace]{workspace}\n\
                     [schedule]\nreconcile = \"{reconcile}\"\n"
                ),
            )
            .unwrap();
            Config::load_with_env(&path, Some(HashMap::new())).unwrap()
        };
        let about_okta = |config: &Config| -> Vec<String> {
            config
                .warnings()
                .into_iter()
                .filter(|w| w.contains("Okta's delta"))
                .collect()
        };
        let daily = okta("", "0 2 * * *");
        let warned = about_okta(&daily);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].contains("for up to 1d") && warned[0].contains("deprovision.sla (1h)"),
            "{warned:?}"
        );
        assert!(about_okta(&okta("", "*/30 * * * *")).is_empty());
        assert!(about_okta(&okta("app_id = \"0oa1\"", "0 2 * * *")).is_empty());
        let file = load("", "[schedule]\nreconcile = \"0 2 * * *\"\n", &[]).unwrap();
        assert!(about_okta(&file).is_empty());
    }

    /// What `ldap_filter_depth` counts: every parenthesis of the filter, none
    /// of a value (written escaped there), and a stray `)` takes nothing below 0.
    #[test]
    fn an_ldap_filter_depth_counts_its_nesting() {
        assert_eq!(ldap_filter_depth("objectClass=user"), 0);
        assert_eq!(ldap_filter_depth("(cn=a\\28b\\29)"), 1);
        assert_eq!(ldap_filter_depth("(&(a=1)(|(b=2)(!(c=3))))"), 4);
        assert_eq!(ldap_filter_depth("))((a=1)"), 2);
    }

    #[test]
    fn spans_use_the_configuration_syntax() {
        let span = |seconds| span(chrono::Duration::seconds(seconds));
        assert_eq!(span(0), "0s");
        assert_eq!(span(45), "45s");
        assert_eq!(span(5_400), "1h30m");
        assert_eq!(span(230_400), "2d16h");
        assert_eq!(parse_duration(&span(93_784)).unwrap().as_secs(), 93_784);
    }

    const GROUPS: &str = r#"role_attribute = "groups"

[workspace.role_groups]
Owner = "Taskade Owners"
editor = " Taskade Editors "
VIEWER = "Taskade Viewers"
"#;

    const MAPPING: &str = r#"
[[policy.mapping]]
group = "Engineering"
workspace_group = "Engineering"
role = "Editor"
"#;

    fn groups_of(config: &Config) -> Vec<(Role, String)> {
        match config.role_attribute().unwrap() {
            RoleAttribute::Groups { groups } => groups,
            other => panic!("not by groups: {other:?}"),
        }
    }

    #[test]
    fn role_groups_load_with_role_names_in_any_case() {
        let config = load(GROUPS, MAPPING, &[]).unwrap();
        let mut groups = groups_of(&config);
        groups.sort();
        assert_eq!(
            groups,
            [
                (Role::Viewer, "Taskade Viewers".to_owned()),
                (Role::Editor, "Taskade Editors".to_owned()),
                (Role::Owner, "Taskade Owners".to_owned()),
            ]
        );
        assert!(config.manages_roles());
        assert_eq!(
            config.scim_settings().unwrap().role_attribute,
            RoleAttribute::Groups {
                groups: groups_of(&config)
            }
        );
        // The redacted configuration check-config prints keeps the table.
        assert!(config.to_redacted_toml().contains("Taskade Owners"));
    }

    #[test]
    fn a_role_group_can_be_set_from_the_environment() {
        let config = load(
            GROUPS,
            MAPPING,
            &[(
                "SEATWARDEN__WORKSPACE__ROLE_GROUPS__MAINTAINER",
                "Taskade Maintainers",
            )],
        )
        .unwrap();
        assert!(groups_of(&config).contains(&(Role::Maintainer, "Taskade Maintainers".to_owned())));
        // The variable's key is lower-cased, the file's `VIEWER` is not: the
        // variable overrides it all the same.
        let config = load(
            GROUPS,
            MAPPING,
            &[("SEATWARDEN__WORKSPACE__ROLE_GROUPS__VIEWER", "Readers")],
        )
        .unwrap();
        let viewers: Vec<String> = groups_of(&config)
            .into_iter()
            .filter(|(role, _)| *role == Role::Viewer)
            .map(|(_, name)| name)
            .collect();
        assert_eq!(viewers, ["Readers"]);
    }

    /// `text` as the whole configuration file, loaded: the error's text.
    fn syntax_error(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seatwarden.toml");
        std::fs::write(&path, text).unwrap();
        Config::load_with_env(&path, Some(HashMap::new()))
            .unwrap_err()
            .to_string()
    }

    /// A syntax error quotes the line it is on, but not a secret's value: a token
    /// half pasted (its closing quote lost) stays out of the terminal and the
    /// journal; the key, the line and what is wrong are still said.
    #[test]
    fn a_syntax_error_on_a_secret_line_does_not_quote_the_secret() {
        let workspace = "[workspace]\nurl = \"https://scim.example.com/scim/v2\"\n";
        let error = syntax_error(&format!("{workspace}token = \"s3cr3t-half-pasted\n"));
        assert!(!error.contains("s3cr3t"), "{error}");
        assert!(error.contains("TOML parse error at line 3"), "{error}");
        assert!(error.contains("3 | token = [redacted]"), "{error}");
        assert!(error.contains("invalid basic string"), "{error}");
        // Inline in a table, in a multi-line string, in a comment beside a mistake.
        for (text, secret) in [
            (
                "[report]\nemail = { password = \"hunter2\" smtp_url = \"smtp://x\" }\n",
                "hunter2",
            ),
            (
                "[directory]\nkind = \"ldap\"\nbind_password = '''pa55\nw0rd-rest\n",
                "w0rd-rest",
            ),
            ("[workspace]\n\"token\" = \"old-t0ken\" 1\n", "old-t0ken"),
            (
                "[workspace]\ntoken = \"\"\"\nAbC+/dEf\\q==\n\"\"\"\n",
                "AbC+/dEf",
            ),
        ] {
            let error = syntax_error(text);
            assert!(!error.contains(secret), "{error}");
            assert!(error.contains("TOML parse error"), "{error}");
        }
    }

    /// An error about a URL key shows the text it quotes without a login or a
    /// query, whatever the mistake: a port out of range (the `url` crate's
    /// words), no scheme, an endpoint copied with the base URL.
    #[test]
    fn an_error_about_a_url_quotes_it_without_login_or_query() {
        let okta = |url: &str| {
            load_directory(&format!(
                "kind = \"okta\"\nurl = \"{url}\"\ntoken = \"t0ken\"\n"
            ))
            .unwrap_err()
        };
        let workspace = |url: &str| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("seatwarden.toml");
            std::fs::write(
                &path,
                format!(
                    "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
                     [workspace]\nurl = \"{url}\"\ntoken = \"t0ken\"\n"
                ),
            )
            .unwrap();
            Config::load_with_env(&path, Some(HashMap::new()))
                .unwrap_err()
                .to_string()
        };
        for (error, shown) in [
            (
                okta("https://svc:pa55@acme.okta.com:99999"),
                "https://[redacted]@acme.okta.com:99999",
            ),
            (okta("svc_r:pa55@acme.okta.com"), "[redacted]@acme.okta.com"),
            (
                workspace("scim.example.com/scim/v2?token=pa55"),
                "scim.example.com/scim/v2?[redacted]",
            ),
            (
                workspace("https://svc:pa55@scim.example.com/scim/v2/Users"),
                "https://[redacted]@scim.example.com/scim/v2",
            ),
        ] {
            assert!(!error.contains("pa55"), "{error}");
            assert!(error.contains(shown), "{error}");
        }
        // Other keys' quotes are left alone: an address is no login.
        let error = load(
            "",
            "[report.email]\nsmtp_url = \"smtp://127.0.0.1\"\nfrom = \"a@\"\nto = [\"b@x\"]\n",
            &[],
        )
        .unwrap_err();
        assert!(error.contains("a@"), "{error}");
        assert!(!error.contains("[redacted]"), "{error}");
        // The example of an error about the URL key keeps its mail addresses.
        let error = load("", "[report.email]\nto = [\"b@x\"]\n", &[]).unwrap_err();
        assert!(
            error.contains("key `report.email.smtp_url`")
                && error.contains("from = \"seatwarden@example.com\"")
                && !error.contains("[redacted]"),
            "{error}"
        );
    }

    /// An inline secret set from a variable that kept its file's line break (a
    /// Kubernetes `secretKeyRef`, a CRLF env file) is read as from its file: a
    /// token alone, a password without the line break but with its spaces.
    #[test]
    fn inline_secrets_lose_the_line_break_a_variable_kept() {
        use secrecy::ExposeSecret;
        // `BASE` sets `token`: the variable replaces it.
        let config = load("", "", &[("SEATWARDEN__WORKSPACE__TOKEN", "t0ken\n")]).unwrap();
        assert_eq!(config.workspace_token().unwrap().expose_secret(), "t0ken");
        let config = load_directory(
            "kind = \"okta\"\nurl = \"https://acme.okta.com\"\ntoken = \" 00aBc\\r\\n\"\n",
        )
        .unwrap();
        let DirectoryConfig::Okta {
            token: Some(token), ..
        } = &config.directory
        else {
            panic!("an Okta token");
        };
        assert_eq!(token.expose_secret(), "00aBc");
        let config = load_directory(
            "kind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\n\
             client_secret = \"s3cret\\n\"\n",
        )
        .unwrap();
        let DirectoryConfig::Entra {
            client_secret: Some(secret),
            ..
        } = &config.directory
        else {
            panic!("an Entra secret");
        };
        assert_eq!(secret.expose_secret(), "s3cret");
        let config = load(
            "",
            "[report.email]\nsmtp_url = \"smtp://127.0.0.1\"\nfrom = \"a@x.com\"\n\
             to = [\"b@x.com\"]\nusername = \"u\"\n",
            &[("SEATWARDEN__REPORT__EMAIL__PASSWORD", " pass \r\n")],
        )
        .unwrap();
        let password = config
            .report
            .email
            .as_ref()
            .unwrap()
            .password
            .as_ref()
            .unwrap();
        assert_eq!(password.expose_secret(), " pass ");
        let config = load_directory(
            "kind = \"ldap\"\nurl = \"ldaps://dc01.example.com\"\n\
             bind_dn = \"CN=svc,DC=example,DC=com\"\nbase_dn = \"DC=example,DC=com\"\n\
             bind_password = \"pa55 \\n\"\n",
        )
        .unwrap();
        let DirectoryConfig::Ldap {
            bind_password: Some(password),
            ..
        } = &config.directory
        else {
            panic!("an LDAP password");
        };
        assert_eq!(password.expose_secret(), "pa55 ");
    }

    /// A secret written as a bare number or boolean is refused, naming the key
    /// and the file and saying to quote it: the `config` crate would hand back
    /// other text (`1.50` as "1.5", `0x1F` as "31"), which fails at the provider
    /// or, for an LDAP password, locks the account. A variable is always text.
    #[test]
    fn a_secret_written_as_a_number_or_boolean_is_refused() {
        for (keys, key) in [
            ("password = 1.50", "report.email.password"),
            ("password = true", "report.email.password"),
        ] {
            let error = load(
                "",
                &format!(
                    "[report.email]\nsmtp_url = \"smtp://127.0.0.1\"\nfrom = \"a@x.com\"\n\
                     to = [\"b@x.com\"]\nusername = \"u\"\n{keys}\n"
                ),
                &[],
            )
            .unwrap_err();
            assert!(
                error.contains(&format!("seatwarden.toml: key `{key}`")),
                "{error}"
            );
            assert!(error.contains("quote"), "{error}");
            assert!(!error.contains("1.5") && !error.contains("true"), "{error}");
        }
        let error =
            load_directory("kind = \"okta\"\nurl = \"https://acme.okta.com\"\ntoken = 0x1F\n")
                .unwrap_err();
        assert!(
            error.contains("seatwarden.toml: key `directory.token`"),
            "{error}"
        );
        assert!(error.contains("quote"), "{error}");
        let error = load_directory(
            "kind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = 12345\n",
        )
        .unwrap_err();
        assert!(error.contains("key `directory.client_secret`"), "{error}");
        let error = load_directory(
            "kind = \"ldap\"\nurl = \"ldaps://dc01.example.com\"\n\
             bind_dn = \"CN=svc,DC=example,DC=com\"\nbase_dn = \"DC=example,DC=com\"\n\
             bind_password = 2024\n",
        )
        .unwrap_err();
        assert!(error.contains("key `directory.bind_password`"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seatwarden.toml");
        std::fs::write(
            &path,
            "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
             [workspace]\nurl = \"https://scim.example.com/scim/v2\"\ntoken = 1234567\n",
        )
        .unwrap();
        let error = Config::load_with_env(&path, Some(HashMap::new()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("seatwarden.toml: key `workspace.token`"),
            "{error}"
        );
        assert!(!error.contains("1234567"), "{error}");
        // A variable's digits are text, kept as written.
        use secrecy::ExposeSecret;
        let config = load("", "", &[("SEATWARDEN__WORKSPACE__TOKEN", "0123")]).unwrap();
        assert_eq!(config.workspace_token().unwrap().expose_secret(), "0123");
    }

    /// An Entra client secret with white space inside (a paste of the portal's
    /// row, two secrets on two lines) is refused as a token is, inline at load
    /// and from its file at the check: Entra generates its secrets from letters,
    /// digits and `-_.~`, and would refuse it naming no key.
    #[test]
    fn an_entra_client_secret_with_space_inside_is_refused() {
        let entra = "kind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\n";
        for secret in ["abc8Q~def ghi", "abc8Q~def\\nold8Q~ghi", "abc8Q~def\\tghi"] {
            let error =
                load_directory(&format!("{entra}client_secret = \"{secret}\"\n")).unwrap_err();
            assert!(
                error.contains("seatwarden.toml: key `directory.client_secret`: has a space"),
                "{error}"
            );
            assert!(!error.contains("abc8Q"), "{error}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("entra-secret");
        std::fs::write(&file, "abc8Q~defghi\nold8Q~jklmno\n").unwrap();
        let config = load_directory(&format!(
            "{entra}client_secret_file = \"{}\"\n",
            file.display()
        ))
        .unwrap();
        let error = config.check_files().unwrap_err().to_string();
        assert!(
            error.contains(&format!(
                "directory.client_secret_file {}: the client secret has a space",
                file.display()
            )),
            "{error}"
        );
        assert!(!error.contains("abc8Q"), "{error}");
        // Surrounding white space is no mistake: it is trimmed.
        std::fs::write(&file, " abc8Q~defghi\r\n").unwrap();
        config.check_files().unwrap();
        load_directory(&format!("{entra}client_secret = \" abc8Q~defghi\\n\"\n")).unwrap();
    }

    /// A variable that names a table, set to text (a token pasted into
    /// `SEATWARDEN__WORKSPACE` for `SEATWARDEN__WORKSPACE__TOKEN`), is refused
    /// naming the variable and saying it names a table, without its value.
    #[test]
    fn a_variable_naming_a_table_does_not_quote_its_value() {
        for (name, value) in [
            ("SEATWARDEN__WORKSPACE", "s3cr3t-pasted-token"),
            ("SEATWARDEN__DIRECTORY", "s3cr3t-pasted-token"),
            ("SEATWARDEN__REPORT__EMAIL", "s3cr3t-pasted-token"),
        ] {
            let error = load("", "", &[(name, value)]).unwrap_err();
            assert!(!error.contains("s3cr3t"), "{error}");
            assert!(
                error.contains(&format!("environment variable {name}")),
                "{error}"
            );
            assert!(error.contains("names a table"), "{error}");
        }
    }

    /// A secret file written with `$CREDENTIALS_DIRECTORY` or systemd's `%d`,
    /// which nothing expands in the configuration, is refused saying so, with the
    /// folder written in full and the unit's way to pass it.
    #[test]
    fn a_secret_path_with_an_unexpanded_variable_says_how_to_write_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seatwarden.toml");
        for written in [
            "$CREDENTIALS_DIRECTORY/workspace-token",
            "%d/workspace-token",
            "/run/credentials/${UNIT}/workspace-token",
        ] {
            std::fs::write(
                &path,
                format!(
                    "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
                     [workspace]\nurl = \"https://scim.example.com/scim/v2\"\n\
                     token_file = \"{written}\"\n"
                ),
            )
            .unwrap();
            let config = Config::load_with_env(&path, Some(HashMap::new())).unwrap();
            let error = config.workspace_token().unwrap_err().to_string();
            assert!(
                error.contains(&format!(
                    "workspace.token_file is written {written:?}, but seatwarden expands no \
                     variable nor systemd's %d"
                )),
                "{error}"
            );
            assert!(
                error.contains("/run/credentials/seatwarden.service/workspace-token"),
                "{error}"
            );
            assert!(
                error.ends_with("Environment=SEATWARDEN__WORKSPACE__TOKEN_FILE=%d/workspace-token"),
                "{error}"
            );
        }
    }

    /// A configuration file others can change is warned about, secrets inline or
    /// not: whoever changes it can send the credentials elsewhere.
    #[cfg(unix)]
    #[test]
    fn a_configuration_file_others_can_change_is_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seatwarden.toml");
        std::fs::write(
            &path,
            "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
             [workspace]\nurl = \"https://scim.example.com/scim/v2\"\n\
             token_file = \"/run/credentials/seatwarden.service/workspace-token\"\n",
        )
        .unwrap();
        let warned = |mode: u32| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let config = Config::load_with_env(&path, Some(HashMap::new())).unwrap();
            config
                .warnings()
                .into_iter()
                .find(|w| w.contains("can be changed by users other than its owner"))
        };
        for mode in [0o666, 0o664, 0o646] {
            let warning = warned(mode).unwrap_or_else(|| panic!("{mode:o} is warned about"));
            assert!(
                warning.starts_with(&path.display().to_string()),
                "{warning}"
            );
            assert!(warning.contains(&format!("(mode {mode:04o})")), "{warning}");
        }
        for mode in [0o644, 0o640, 0o600] {
            assert_eq!(warned(mode), None, "{mode:o}");
        }
    }

    /// A line that holds no secret is still quoted, to show the mistake.
    #[test]
    fn a_syntax_error_elsewhere_quotes_its_line() {
        let error = syntax_error("[workspace]\nurl = \"https://scim.example.com\nx = 1\n");
        assert!(
            error.contains("2 | url = \"https://scim.example.com"),
            "{error}"
        );
        let error = syntax_error("[workspace]\ntoken_file = \"/run/credentials/tok\" 1\n");
        assert!(error.contains("/run/credentials/tok"), "{error}");
    }

    /// A name the configuration compares with the directory's or the
    /// workspace's, pasted with a character that does not show (a zero-width
    /// space from a chat or a wiki, a no-break space), names nobody: a protected
    /// account or an exception so written kept nothing, and nothing said so.
    /// Refused at load, naming the key and the character, as the file directory
    /// refuses such a value.
    #[test]
    fn a_name_with_a_character_that_does_not_show_is_refused_naming_it() {
        let cases = [
            (
                "[safety]\nprotected = [\"admin@x.com\u{200b}\"]\n",
                "safety.protected",
                "zero-width space (U+200B)",
            ),
            (
                "[safety]\nprotected_groups = [\"IT\u{a0}Admins\"]\n",
                "safety.protected_groups",
                "no-break space (U+00A0)",
            ),
            (
                "[policy]\nscope_groups = [\"Staff\u{feff}\"]\n",
                "policy.scope_groups",
                "U+FEFF",
            ),
            (
                "[[policy.mapping]]\ngroup = \"Eng\u{200d}ineering\"\nworkspace_group = \"Eng\"\nrole = \"Editor\"\n",
                "policy.mapping[0].group",
                "U+200D",
            ),
            (
                "[[policy.mapping]]\ngroup = \"Eng\"\nworkspace_group = \"Eng\u{ad}\"\nrole = \"Editor\"\n",
                "policy.mapping[0].workspace_group",
                "U+00AD",
            ),
            (
                "role_attribute = \"groups\"\n[workspace.role_groups]\nViewer = \"Viewers\u{200b}\"\n",
                "workspace.role_groups.Viewer",
                "zero-width space (U+200B)",
            ),
            (
                "[[safety.exceptions]]\nuser_name = \"ada@x.com\u{200b}\"\nuntil = \"2099-01-01\"\nreason = \"legal hold\"\n",
                "safety.exceptions[0].user_name",
                "zero-width space (U+200B)",
            ),
        ];
        for (rest, key, named) in cases {
            let error = load("", rest, &[]).unwrap_err();
            assert!(
                error.contains(key) && error.contains(named),
                "{rest}: {error}"
            );
        }
        // Spaces inside a name are as they are typed.
        assert!(load("", "[safety]\nprotected_groups = [\"IT Admins\"]\n", &[]).is_ok());
    }

    /// Some characters that do not show are part of how a name is written: the
    /// zero-width non-joiner inside a Persian word (`می‌خواهم`), the joiner in
    /// an emoji sequence (`👩‍💻`), and the ideographic space a Japanese input
    /// method types (`営業部　東京`). A directory group so named must stay
    /// nameable in the configuration: refused, a configuration that mapped or
    /// protected it failed to load after the upgrade, the daemon with it. The
    /// same characters where no script puts them (a joiner between Latin
    /// letters, at an end) are still refused.
    #[test]
    fn a_name_written_with_joiners_or_an_ideographic_space_is_taken() {
        let mapped = |group: &str| {
            format!(
                "[[policy.mapping]]\ngroup = \"{group}\"\nworkspace_group = \"Team\"\n\
                 role = \"Editor\"\n"
            )
        };
        for name in [
            "\u{62a}\u{6cc}\u{645}\u{200c}\u{647}\u{627}\u{6cc} \u{641}\u{646}\u{6cc}",
            "\u{1f469}\u{200d}\u{1f4bb} Devs",
            "\u{55b6}\u{696d}\u{90e8}\u{3000}\u{6771}\u{4eac}",
        ] {
            let config = load("", &mapped(name), &[]);
            assert!(config.is_ok(), "{name:?}: {config:?}");
            let protected = format!("[safety]\nprotected_groups = [\"{name}\"]\n");
            let config = load("", &protected, &[]);
            assert!(config.is_ok(), "{name:?}: {config:?}");
        }
        for name in [
            "Eng\u{200c}ineering",
            "\u{200d}\u{62a}\u{6cc}",
            "Ops \u{200c}\u{62a}",
        ] {
            let error = load("", &mapped(name), &[]).unwrap_err();
            assert!(
                error.contains("policy.mapping[0].group"),
                "{name:?}: {error}"
            );
        }
    }

    /// Two keys in the file for one role, in two spellings, are refused.
    #[test]
    fn one_role_twice_in_the_file_is_refused() {
        let error = load(
            "role_attribute = \"groups\"\n[workspace.role_groups]\nViewer = \"A\"\nviewer = \"B\"\n",
            "",
            &[],
        )
        .unwrap_err();
        assert!(
            error.contains("key `workspace.role_groups.viewer`"),
            "{error}"
        );
        assert!(error.contains("given a group twice"), "{error}");
    }

    /// Each refusal names the key (and the file), as the other keys' do.
    #[test]
    fn bad_role_groups_are_refused_naming_the_key() {
        let refused = |workspace: &str, rest: &str| {
            let error = load(workspace, rest, &[]).unwrap_err();
            assert!(error.contains("seatwarden.toml"), "{error}");
            error
        };
        let error = refused(
            "role_attribute = \"groups\"\n[workspace.role_groups]\nViewer = \"V\"\nBoss = \"B\"\n",
            "",
        );
        assert!(
            error.contains("key `workspace.role_groups.boss`")
                || error.contains("key `workspace.role_groups.Boss`"),
            "{error}"
        );
        assert!(error.contains("unknown role"), "{error}");

        let error = refused(
            "role_attribute = \"groups\"\n[workspace.role_groups]\nViewer = \"  \"\n",
            "",
        );
        assert!(
            error.contains("workspace.role_groups.") && error.contains("empty"),
            "{error}"
        );

        let error = refused(
            "role_attribute = \"groups\"\n[workspace.role_groups]\nViewer = \"Readers\"\nEditor = \" readers\"\n",
            "",
        );
        assert!(error.contains("key `workspace.role_groups."), "{error}");
        assert!(error.contains("one group can give one role"), "{error}");

        let error = refused(
            "role_attribute = \"groups\"\n[workspace.role_groups]\nViewer = \"V\"\nEditor = \"engineering\"\n",
            MAPPING,
        );
        assert!(error.contains("key `workspace.role_groups."), "{error}");
        assert!(
            error.contains("policy.mapping[0].workspace_group"),
            "{error}"
        );

        let error = refused(
            "role_attribute = \"groups\"\n[workspace.role_groups]\nViewer = \"Break Glass\"\n",
            "[safety]\nprotected_groups = [\"break glass\"]\n",
        );
        assert!(error.contains("key `workspace.role_groups."), "{error}");
        assert!(error.contains("safety.protected_groups"), "{error}");

        let error = refused("[workspace.role_groups]\nViewer = \"V\"\n", "");
        assert!(error.contains("key `workspace.role_groups`"), "{error}");
        assert!(error.contains("role_attribute = \"groups\""), "{error}");

        let error = refused("role_attribute = \"groups\"\n", "");
        assert!(error.contains("key `workspace.role_groups`"), "{error}");
        assert!(error.contains("policy.default_role"), "{error}");

        let error = refused(
            "role_attribute = \"groups\"\n[workspace.role_groups]\nViewer = \"V\"\n",
            MAPPING,
        );
        assert!(error.contains("key `workspace.role_groups`"), "{error}");
        assert!(
            error.contains("role Editor, which policy.mapping[0] gives"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_role_attribute_names_groups_among_the_choices() {
        let error = load("role_attribute = \"group\"\n", "", &[]).unwrap_err();
        assert!(error.contains("key `workspace.role_attribute`"), "{error}");
        assert!(error.contains("\"groups\""), "{error}");
    }

    /// Every `"SEATWARDEN_…"` name the sources read (a clap `env = "…"`, a
    /// `var("…")`) is among [`OWN_VARIABLES`], so that setting it is not warned
    /// about as a misspelt override. This file is left out: its names are the
    /// prefix's and its tests' examples.
    #[test]
    fn own_variables_are_every_name_the_sources_read() {
        fn sources(dir: &Path, files: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    sources(&path, files);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let quoted = format!("\"{ENV_PREFIX}_");
        let mut read = std::collections::BTreeSet::new();
        for file in files.iter().filter(|f| !f.ends_with("config.rs")) {
            let text = std::fs::read_to_string(file).unwrap();
            for (at, _) in text.match_indices(&quoted) {
                let name: String = text[at + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if !name.starts_with(&format!("{ENV_PREFIX}__")) {
                    read.insert(name);
                }
            }
        }
        let own: std::collections::BTreeSet<String> =
            OWN_VARIABLES.iter().map(|v| (*v).to_owned()).collect();
        assert_eq!(read, own);
    }

    /// Every `SEATWARDEN_…` name the shipped scripts and tools use (`scripts/`,
    /// `systemd/`, `.ci/`), but the binary's own, is among [`TOOL_VARIABLES`] and
    /// the reverse, so that running them draws no "is not read" warning; and none
    /// of them is a spelling the warning would take for a misspelt override (it
    /// starts with no section of the configuration), so that none silences one.
    #[test]
    fn tool_variables_are_every_name_the_shipped_scripts_use() {
        fn files(dir: &Path, found: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    files(&path, found);
                } else {
                    found.push(path);
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut found = Vec::new();
        for dir in ["scripts", "systemd", ".ci"] {
            files(&root.join(dir), &mut found);
        }
        let mut used = std::collections::BTreeSet::new();
        for file in &found {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            for (at, _) in text.match_indices(&format!("{ENV_PREFIX}_")) {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if !name.starts_with(&format!("{ENV_PREFIX}__"))
                    && !OWN_VARIABLES.contains(&name.as_str())
                {
                    used.insert(name);
                }
            }
        }
        let tools: std::collections::BTreeSet<String> =
            TOOL_VARIABLES.iter().map(|v| (*v).to_owned()).collect();
        assert_eq!(used, tools);
        let config = load("", "", &[]).unwrap();
        let loaded = toml::Value::try_from(&config).unwrap();
        let table = loaded.as_table().unwrap();
        for name in TOOL_VARIABLES {
            let rest = &name[ENV_PREFIX.len() + 1..];
            assert_eq!(sections_split(table, rest), None, "{name}");
            assert!(!is_unread_variable(name), "{name}");
        }
    }

    /// Two mappings of one group to one workspace group with different roles are
    /// warned about, naming both tables and the role that wins; the same group to
    /// another workspace group, or the same role twice, is not.
    #[test]
    fn a_mapping_repeated_with_another_role_is_warned_about() {
        let mapping = |group: &str, workspace_group: &str, role: &str| {
            format!(
                "[[policy.mapping]]\ngroup = {group:?}\nworkspace_group = \
                 {workspace_group:?}\nrole = {role:?}\n"
            )
        };
        let warned = |rest: String| -> Vec<String> {
            load("", &rest, &[])
                .unwrap()
                .warnings()
                .into_iter()
                .filter(|w| w.contains("both map group"))
                .collect()
        };
        let warnings = warned(
            mapping("Design", "Design", "Commenter")
                + &mapping("Sales", "Sales", "Viewer")
                + &mapping("Design", "Design", "Owner"),
        );
        assert_eq!(
            warnings,
            [
                "policy.mapping[0] and policy.mapping[2] both map group \"Design\" to workspace \
              group \"Design\", as Commenter and as Owner: its members get Owner, the higher; \
              remove the table not meant"
            ]
        );
        assert!(
            warned(
                mapping("Design", "Design", "Commenter")
                    + &mapping("Design", "Tools", "Owner")
                    + &mapping("Sales", "Sales", "Viewer")
                    + &mapping("Sales", "Sales", "Viewer")
            )
            .is_empty()
        );
    }

    /// `EST` as a time zone is warned about (the key named, the zone with
    /// daylight saving offered), for either key; `America/New_York` is not.
    #[test]
    fn a_zone_without_daylight_saving_is_warned_about() {
        let warned = |rest: &str| -> Vec<String> {
            load("", rest, &[])
                .unwrap()
                .warnings()
                .into_iter()
                .filter(|w| w.contains("daylight saving"))
                .collect()
        };
        let warnings = warned("[schedule]\ntimezone = \"EST\"\n");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("schedule.timezone: \"EST\" is UTC-05:00 all year")
                && warnings[0].contains("\"America/New_York\""),
            "{warnings:?}"
        );
        let warnings = warned("[report]\ntimezone = \"MST\"\n");
        assert!(
            warnings.len() == 1 && warnings[0].starts_with("report.timezone: \"MST\""),
            "{warnings:?}"
        );
        assert!(warned("[schedule]\ntimezone = \"America/New_York\"\n").is_empty());
    }

    /// `Etc/GMT+5` is five hours *behind* UTC (POSIX signs): written for
    /// UTC+05:00, every schedule runs ten hours off. Warned about, with the
    /// offset it is and the name of the one probably meant; `Etc/GMT` and a
    /// zone of a place are not.
    #[test]
    fn an_etc_gmt_zone_is_warned_about_its_inverted_sign() {
        let warned = |rest: &str| -> Vec<String> {
            load("", rest, &[])
                .unwrap()
                .warnings()
                .into_iter()
                .filter(|w| w.contains("Etc/GMT"))
                .collect()
        };
        let warnings = warned("[schedule]\ntimezone = \"Etc/GMT+5\"\n");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("schedule.timezone: \"Etc/GMT+5\" is UTC-05:00")
                && warnings[0].contains("\"Etc/GMT-5\""),
            "{warnings:?}"
        );
        let warnings = warned("[report]\ntimezone = \"Etc/GMT-10\"\n");
        assert!(
            warnings.len() == 1
                && warnings[0].starts_with("report.timezone: \"Etc/GMT-10\" is UTC+10:00")
                && warnings[0].contains("for UTC-10:00 write \"Etc/GMT+10\""),
            "{warnings:?}"
        );
        // No zone is UTC-14:00: none is offered.
        let warnings = warned("[schedule]\ntimezone = \"Etc/GMT-14\"\n");
        assert!(
            warnings.len() == 1
                && warnings[0].starts_with("schedule.timezone: \"Etc/GMT-14\" is UTC+14:00")
                && !warnings[0].contains("Etc/GMT+14"),
            "{warnings:?}"
        );
        assert!(warned("[schedule]\ntimezone = \"Etc/GMT\"\n").is_empty());
        assert!(warned("[schedule]\ntimezone = \"Etc/GMT-0\"\n").is_empty());
        assert!(warned("[schedule]\ntimezone = \"Asia/Kathmandu\"\n").is_empty());
    }

    #[test]
    fn an_unread_variable_is_told_apart_from_overrides_and_own_variables() {
        for name in [
            "SEATWARDEN_STATE_PATH",
            "SEATWARDEN_WORKSPACE__TOKEN",
            "seatwarden__workspace__token",
            "Seatwarden_Config",
        ] {
            assert!(is_unread_variable(name), "{name}");
        }
        for name in [
            "SEATWARDEN__STATE__PATH",
            "SEATWARDEN_CONFIG",
            "SEATWARDEN_OPERATOR",
            "SEATWARDEN_SANDBOX_TOKEN",
            "SEATWARDENS_HOME",
            "PATH",
        ] {
            assert!(!is_unread_variable(name), "{name}");
        }
    }

    /// `check-config` prints a `safety.distinct_groups` entry with what sets
    /// it apart written out (and reads back the same): printed as it was, the
    /// no-break space made `"IT Admins"` read as the protected group itself.
    #[test]
    fn check_config_spells_out_what_sets_a_distinct_group_apart() {
        let config = load(
            "",
            "[policy]\nscope_groups = [\"Founders Club\"]\n\n\
             [safety]\nprotected_groups = [\"IT Admins\"]\n\
             distinct_groups = [\"Founder's Club\", \"IT\\u00A0Admins\", \"Founders\\u200B \\\"Club\\\"\"]\n",
            &[],
        )
        .unwrap();
        let printed = config.to_redacted_toml();
        assert!(printed.contains(r#""IT\u00A0Admins""#), "{printed}");
        assert!(!printed.contains("IT\u{a0}Admins"), "{printed}");
        assert!(printed.contains("Founder's Club"), "{printed}");
        let read_back: toml::Table = toml::from_str(&printed).unwrap();
        let distinct: Vec<&str> = read_back["safety"]["distinct_groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            distinct,
            [
                "Founder's Club",
                "IT\u{a0}Admins",
                "Founders\u{200b} \"Club\""
            ]
        );
    }
}
