//! The configuration file and its environment overlay.
//!
//! `seatwarden.toml` is read with the `config` crate (TOML only); every key can be
//! overridden with `SEATWARDEN__SECTION__KEY` environment variables (`__` separates
//! the levels, e.g. `SEATWARDEN__WORKSPACE__PAGE_SIZE=50`; lists take commas, e.g.
//! `SEATWARDEN__POLICY__SCOPE_GROUPS="Taskade Users,Contractors"`).
//!
//! Unknown keys and wrong types are errors naming the key and the file. Relative
//! paths are relative to the directory holding the configuration file, so a unit
//! file can point at `/etc/seatwarden/seatwarden.toml` from anywhere. Secrets (the
//! workspace `token`) can be given inline or as `token_file` (systemd credentials,
//! container secrets); they are held as `SecretString` and print as `[redacted]`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

use crate::directory::{
    Directory, EntraAuth, EntraSettings, EntraSource, FileSource, OktaAuth, OktaSettings,
    OktaSource, Secret,
};
use crate::guard::GuardSettings;
use crate::model::Role;
use crate::plan::{DeprovisionAction, PlanSettings};
use crate::policy::{Mapping, PolicySettings, Protected, UnmatchedAccounts};
use crate::retry::RetryPolicy;
use crate::workspace::{RoleAttribute, ScimSettings};

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
    #[error("{path}: key `{key}`: cannot read secret file {file}: {source}")]
    SecretFile {
        path: PathBuf,
        key: String,
        file: PathBuf,
        source: std::io::Error,
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
    /// Where the file was read from; not a key.
    #[serde(skip)]
    pub source: PathBuf,
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
        #[serde(default = "defaults::okta_max_concurrency")]
        max_concurrency: usize,
        #[serde(default = "defaults::timeout")]
        timeout: String,
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
        #[serde(default = "defaults::entra_max_concurrency")]
        max_concurrency: usize,
        /// Keeps a snapshot inside Graph's directory read budget; 0 disables.
        #[serde(default = "defaults::entra_requests_per_second")]
        requests_per_second: u32,
        #[serde(default = "defaults::timeout")]
        timeout: String,
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
    /// `roles` | `none` | a full extension attribute path.
    #[serde(default = "defaults::role_attribute")]
    pub role_attribute: String,
    #[serde(default = "defaults::page_size")]
    pub page_size: u32,
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: usize,
    #[serde(default = "defaults::requests_per_second")]
    pub requests_per_second: u32,
    #[serde(default = "defaults::timeout")]
    pub timeout: String,
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeprovisionConfig {
    #[serde(default = "defaults::deprovision_action")]
    pub action: DeprovisionAction,
}

impl Default for DeprovisionConfig {
    fn default() -> Self {
        DeprovisionConfig {
            action: defaults::deprovision_action(),
        }
    }
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
}

impl Default for SafetyConfig {
    fn default() -> Self {
        SafetyConfig {
            max_deprovisions: defaults::max_deprovisions(),
            max_deprovision_percent: defaults::max_deprovision_percent(),
            min_population_for_percent: defaults::min_population_for_percent(),
            protected: Vec::new(),
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

mod defaults {
    use super::*;
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
    pub fn state_path() -> PathBuf {
        PathBuf::from("seatwarden.db")
    }
    /// Well below Okta's 75 concurrent requests per org, which other
    /// integrations share.
    pub fn okta_max_concurrency() -> usize {
        8
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
const ENV_LIST_KEYS: [&str; 2] = ["policy.scope_groups", "safety.protected"];

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
        if !path.is_file() {
            return Err(ConfigError::NotFound {
                path: path.to_owned(),
            });
        }
        let mut environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",");
        for key in ENV_LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }
        if let Some(env) = env {
            environment = environment.source(Some(env));
        }
        let raw = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(environment)
            .build()
            .map_err(|e| describe_config_error(path, e))?;
        let mut config: Config = raw
            .try_deserialize()
            .map_err(|e| describe_config_error(path, e))?;
        config.source = path.to_owned();
        config.resolve_paths();
        config.validate()?;
        Ok(config)
    }

    fn base_dir(&self) -> PathBuf {
        self.source
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    fn resolve_paths(&mut self) {
        let base = self.base_dir();
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match &mut self.directory {
            DirectoryConfig::File { path } => resolve(path),
            DirectoryConfig::Okta {
                token_file,
                private_key_file,
                ..
            } => {
                token_file.iter_mut().for_each(resolve);
                private_key_file.iter_mut().for_each(resolve);
            }
            DirectoryConfig::Entra {
                client_secret_file,
                certificate_file,
                private_key_file,
                ..
            } => {
                client_secret_file.iter_mut().for_each(resolve);
                certificate_file.iter_mut().for_each(resolve);
                private_key_file.iter_mut().for_each(resolve);
            }
        }
        if let Some(file) = &mut self.workspace.token_file {
            resolve(file);
        }
        resolve(&mut self.state.path);
    }

    fn key_error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Key {
            path: self.source.clone(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_directory()?;
        let url = url::Url::parse(&self.workspace.url)
            .map_err(|e| self.key_error("workspace.url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(self.key_error("workspace.url", "must be an http:// or https:// URL"));
        }
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
        RoleAttribute::parse(&self.workspace.role_attribute)
            .map_err(|e| self.key_error("workspace.role_attribute", e))?;
        if self.workspace.page_size == 0 {
            return Err(self.key_error("workspace.page_size", "must be at least 1"));
        }
        if self.workspace.max_concurrency == 0 {
            return Err(self.key_error("workspace.max_concurrency", "must be at least 1"));
        }
        if self.workspace.requests_per_second == 0 {
            return Err(self.key_error("workspace.requests_per_second", "must be at least 1"));
        }
        parse_duration(&self.workspace.timeout)
            .map_err(|e| self.key_error("workspace.timeout", e))?;
        let percent = self.safety.max_deprovision_percent;
        if !(0.0..=100.0).contains(&percent) {
            return Err(self.key_error(
                "safety.max_deprovision_percent",
                "must be between 0 and 100",
            ));
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

    /// The directory connector's keys: one way to authenticate, http(s) URLs,
    /// limits above zero. Secret files are read at use, not here.
    fn validate_directory(&self) -> Result<(), ConfigError> {
        let http_url = |key: &str, url: &url::Url| {
            if matches!(url.scheme(), "http" | "https") {
                Ok(())
            } else {
                Err(self.key_error(key, "must be an http:// or https:// URL"))
            }
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
                max_concurrency,
                timeout,
                ..
            } => {
                http_url("directory.url", url)?;
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
                max_concurrency,
                timeout,
                ..
            } => {
                if tenant_id.trim().is_empty() {
                    return Err(self.key_error("directory.tenant_id", "must not be empty"));
                }
                if client_id.trim().is_empty() {
                    return Err(self.key_error("directory.client_id", "must not be empty"));
                }
                if let Some(url) = graph_url {
                    http_url("directory.graph_url", url)?;
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
        };
        if max_concurrency == 0 {
            return Err(self.key_error("directory.max_concurrency", "must be at least 1"));
        }
        parse_duration(timeout).map_err(|e| self.key_error("directory.timeout", e))?;
        Ok(())
    }

    /// The configured directory source. Secrets stay files (or inline values) and
    /// are read by the connector at use, so a rotated credential is picked up.
    pub fn directory(&self) -> Directory {
        let policy = self.policy_settings();
        let scope_groups = policy.scope_groups.clone();
        let mapped_groups: Vec<String> = policy
            .mappings
            .iter()
            .map(|m| m.group.clone())
            .filter(|g| !scope_groups.contains(g))
            .collect();
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
        let timeout = |t: &str| parse_duration(t).unwrap_or(Duration::from_secs(30));
        match &self.directory {
            DirectoryConfig::File { path } => Directory::File(FileSource::new(path.clone())),
            DirectoryConfig::Okta {
                url,
                token,
                token_file,
                client_id,
                private_key_file,
                key_id,
                app_id,
                max_concurrency,
                timeout: t,
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
                    mapped_groups,
                    max_concurrency: *max_concurrency,
                    timeout: timeout(t),
                    retry: RetryPolicy::default(),
                    overlap: Duration::from_secs(300),
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
                    mapped_groups,
                    max_concurrency: *max_concurrency,
                    requests_per_second: *requests_per_second,
                    timeout: timeout(t),
                    retry: RetryPolicy::default(),
                }))
            }
        }
    }

    /// The workspace token, read from `token_file` when given. Read at use, not at
    /// load, so a rotated credential file is picked up by the next run.
    pub fn workspace_token(&self) -> Result<SecretString, ConfigError> {
        if let Some(token) = &self.workspace.token {
            return Ok(token.clone());
        }
        let file = self.workspace.token_file.clone().unwrap_or_default();
        let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::SecretFile {
            path: self.source.clone(),
            key: "workspace.token_file".into(),
            file: file.clone(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(self.key_error(
                "workspace.token_file",
                format!("{} is empty", file.display()),
            ));
        }
        Ok(SecretString::from(token.to_owned()))
    }

    pub fn scim_settings(&self) -> Result<ScimSettings, ConfigError> {
        let base_url = url::Url::parse(&self.workspace.url)
            .map_err(|e| self.key_error("workspace.url", format!("not a URL: {e}")))?;
        let role_attribute = RoleAttribute::parse(&self.workspace.role_attribute)
            .map_err(|e| self.key_error("workspace.role_attribute", e))?;
        let timeout = parse_duration(&self.workspace.timeout)
            .map_err(|e| self.key_error("workspace.timeout", e))?;
        Ok(ScimSettings {
            base_url,
            token: self.workspace_token()?,
            role_attribute,
            page_size: self.workspace.page_size,
            max_concurrency: self.workspace.max_concurrency,
            requests_per_second: self.workspace.requests_per_second,
            timeout,
            retry: RetryPolicy::default(),
        })
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

    pub fn plan_settings(&self) -> PlanSettings {
        PlanSettings {
            deprovision: self.deprovision.action,
            unmatched_accounts: self.policy.unmatched_accounts,
            manage_roles: self.manages_roles(),
            protected: Protected::new(&self.safety.protected),
        }
    }

    pub fn guard_settings(&self) -> GuardSettings {
        GuardSettings {
            max_deprovisions: self.safety.max_deprovisions,
            max_deprovision_percent: self.safety.max_deprovision_percent,
            min_population_for_percent: self.safety.min_population_for_percent,
        }
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Turns the `config` crate's errors into ones that name the file and the key.
/// A value that came from the environment names the variable instead of the file.
fn describe_config_error(path: &Path, error: config::ConfigError) -> ConfigError {
    let source = |origin: Option<String>, key: Option<&str>| -> PathBuf {
        match origin.filter(|o| !o.is_empty()) {
            Some(o) if o == "the environment" => PathBuf::from(match key {
                Some(key) => format!(
                    "environment variable {ENV_PREFIX}__{}",
                    key.replace('.', "__").to_uppercase()
                ),
                None => "the environment".to_owned(),
            }),
            Some(o) => PathBuf::from(o),
            None => path.to_owned(),
        }
    };
    match error {
        config::ConfigError::Type {
            origin,
            unexpected,
            expected,
            key,
        } => ConfigError::Key {
            path: source(origin, key.as_deref()),
            key: key.unwrap_or_else(|| "?".into()),
            message: format!("invalid type: {unexpected}, expected {expected}"),
        },
        config::ConfigError::At { error, origin, key } => {
            let path = source(origin, key.as_deref());
            match key {
                Some(key) => ConfigError::Key {
                    path,
                    key,
                    message: error.to_string(),
                },
                None => ConfigError::Invalid {
                    path,
                    message: error.to_string(),
                },
            }
        }
        other => ConfigError::Invalid {
            path: path.to_owned(),
            message: other.to_string(),
        },
    }
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
    Ok(total)
}
