//! Okta (`kind = "okta"`): the Management API, read-only.
//!
//! - Auth: an API token (`Authorization: SSWS …`) or an OAuth 2.0 service app with
//!   `private_key_jwt` (scopes `okta.users.read okta.groups.read`, and
//!   `okta.apps.read` with `app_id` only: Okta refuses a token request naming a
//!   scope the app was not granted);
//!   the access token is cached and refreshed five minutes before it expires, and
//!   once more if the API answers 401 mid-snapshot.
//! - DPoP (RFC 9449), automatic: a token request refused with
//!   `invalid_dpop_proof` for want of a proof is sent again with one, signed by an
//!   ES256 key made in memory per instance ([`super::dpop`]), and later ones carry
//!   one from the start. A `use_dpop_nonce` (400 from the token endpoint, 401
//!   `WWW-Authenticate: DPoP` from the API) with a `DPoP-Nonce` is resent once
//!   with it; each server's latest nonce goes in every proof to it (the API's
//!   the token endpoint's until it gives one of its own). A token with `token_type: DPoP`
//!   is sent as `Authorization: DPoP …` with a proof per request (`ath`, and an
//!   `htu` without the query: each next page its own). See
//!   [`OktaSource::fetch_token`].
//! - Users: `GET /api/v1/users?limit=200` plus `search=status eq "DEPROVISIONED"`,
//!   because Okta omits DEPROVISIONED users from a plain list.
//! - Groups: `GET /api/v1/groups`, members from `/api/v1/groups/{id}/users` for the
//!   groups the configuration names (`scope_groups`, mappings and
//!   `safety.protected_groups`, without regard to case; every group when it names
//!   none). With `app_id`, the snapshot keeps only the users assigned to the app,
//!   directly or through an assigned group (`/api/v1/apps/{id}/users`, `/groups`).
//! - Paging: the `Link: <…>; rel="next"` header, as several header lines or one
//!   comma-joined line; a link to another origin or to a page already read (the
//!   first one too) is an error, and
//!   so is a listing longer than [`Limits::max_pages`] or an answer longer than
//!   [`Limits::max_body_bytes`]. An id that is empty or a dot segment is never put
//!   in a path.
//! - Deltas (`changes_since`): users with `lastUpdated` after the cursor minus an
//!   overlap; the cursor is Okta's time when the read started (our clock corrected
//!   by the answers' `Date`: back in full, forward by the overlap at most, since a
//!   `Date` wrongly ahead would skip changes), as `lastUpdated` is Okta's time, and the id and name
//!   of each group of interest as the last full read found them: one renamed or
//!   deleted since (`GET /api/v1/groups/{id}`) reads in full, as does a cursor
//!   without them (`okta-v1:`, from an older version).
//! - A 403 (`E0000006`) names what the refused read needs: the scope and an
//!   admin role for a service app, an admin role for an API token. An error
//!   body's `errorCauses` follow its `errorSummary`. Every refused
//!   request's error ends with Okta's `errorId` and `X-Okta-Request-Id`, what a
//!   support case asks for; a DPoP proof still refused says what to check (a
//!   proxy dropping the headers, the clock).
//! - Rate limits: every answer's `X-Rate-Limit-Remaining`/`X-Rate-Limit-Reset` are
//!   kept per endpoint family (an app's users and groups are one, Okta's
//!   `/api/v1/apps*`); when few requests remain, requests wait for the reset
//!   instead of running into 429. A 429 waits until `X-Rate-Limit-Reset`; so does
//!   the token request of a service app (`/oauth2/v1/token` is a family too). A 429
//!   with neither `X-Rate-Limit-Reset` nor `Retry-After` (a proxy's, or headers
//!   stripped on the way) pauses every request for the refused one's backoff. At most
//!   `max_concurrency` requests are in flight (Okta's org-wide limit is 75, shared
//!   by every app of the org): a 429 for that limit carries its values in
//!   `X-Rate-Limit-*` (an `X-Rate-Limit-Limit` other than the family's, or from a
//!   family not heard from yet), which are not recorded as the family's, and
//!   pauses every request for the refused one's wait (until that reset, or its
//!   backoff).
//!
//! Status mapping: ACTIVE, PROVISIONED (activation pending; Okta provisions apps to
//! them), RECOVERY, PASSWORD_EXPIRED, LOCKED_OUT → active; STAGED (never activated)
//! and SUSPENDED → suspended; DEPROVISIONED, or a deactivation under way
//! (`transitioningToStatus: DEPROVISIONED`, whatever `status` still says) →
//! deprovisioned; a deleted user is absent. An unknown status is read as suspended
//! (no access) and logged.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};
use futures::{StreamExt, TryStreamExt};
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::remote::{
    self, Reply, Secret, TokenCache, Transport, endpoint_of, required_str, same_origin,
    status_error,
};
use super::{DirectoryChanges, DirectoryError, GroupInterest, RemoteStats, dpop, jwt};
use crate::http::{Limits, encode_component, page_cap_reached, path_segment};
use crate::model::{DirectorySnapshot, Identity, IdentityStatus};
use crate::retry::RetryPolicy;

const PROVIDER: &str = "okta";
/// Okta's maximum page sizes: users 200, group members 1000, app users 500.
const USERS_LIMIT: u32 = 200;
const GROUPS_LIMIT: u32 = 200;
const MEMBERS_LIMIT: u32 = 1000;
const APP_USERS_LIMIT: u32 = 500;
const APP_GROUPS_LIMIT: u32 = 200;
/// The OAuth scopes a service app asks for (read-only), without `app_id`.
pub const OAUTH_SCOPES: &str = "okta.users.read okta.groups.read";
/// [`OAUTH_SCOPES`] and the app assignments', with `app_id`. Okta's org
/// authorization server refuses a token request naming any scope not granted to
/// the service app (`invalid_scope`): asked for always, `okta.apps.read` would
/// make a least-privilege grant without it fail every read.
pub const OAUTH_SCOPES_WITH_APP: &str = "okta.users.read okta.groups.read okta.apps.read";
/// A cursor: Okta's time when the read started and the groups of interest (JSON).
const CURSOR_PREFIX: &str = "okta-v2:";
/// A cursor from before the groups of interest were recorded: the time alone.
const OLD_CURSOR_PREFIX: &str = "okta-v1:";
/// Above this many changed users, `changes_since` reads a full snapshot instead:
/// each changed user costs a request for their groups.
const MAX_DELTA_USERS: usize = 250;

#[derive(Debug, Clone)]
pub enum OktaAuth {
    /// An API token, sent as `Authorization: SSWS <token>`.
    Ssws(Secret),
    /// An OAuth 2.0 service app authenticating with `private_key_jwt`.
    PrivateKeyJwt {
        client_id: String,
        /// The JWK `kid` of the registered public key, when Okta holds several.
        key_id: Option<String>,
        /// A PEM RSA private key (PKCS#8 or PKCS#1).
        private_key: Secret,
    },
}

#[derive(Debug, Clone)]
pub struct OktaSettings {
    /// The org URL, e.g. `https://acme.okta.com`.
    pub url: url::Url,
    pub auth: OktaAuth,
    /// Scope = the users and groups assigned to this app.
    pub app_id: Option<String>,
    /// Group names (`profile.name`) the policy scopes by; each must exist.
    pub scope_groups: Vec<String>,
    /// The other group names the configuration names (mappings,
    /// `safety.protected_groups`); read when present.
    pub other_groups: Vec<String>,
    /// `safety.distinct_groups`: directory groups that only look like a
    /// configured one but are declared other groups ([`GroupInterest::new`]).
    pub distinct_groups: Vec<String>,
    /// Groups that must exist (also in `other_groups`): `safety.protected_groups`
    /// and the groups mapped to Owner, where a typo would take protection away or
    /// demote every Owner without a word.
    pub required_groups: Vec<super::RequiredGroup>,
    pub max_concurrency: usize,
    /// Per request (each attempt).
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// `changes_since` asks for changes since the last cursor minus this much,
    /// covering clock skew and Okta's eventually consistent `lastUpdated` index.
    pub overlap: Duration,
    /// The profile attribute that becomes the workspace userName.
    pub user_name: OktaUserName,
    /// `directory.ca_file`: PEM CAs trusted instead of the system's roots, read
    /// when the connection is made ([`super::remote::ca_pem`]).
    pub ca_file: Option<std::path::PathBuf>,
}

/// `directory.user_name_attribute` for Okta: which profile attribute becomes the
/// workspace userName. Okta's own SCIM apps offer the same choice ("Application
/// username format"); a workspace that identifies people by email (Taskade does)
/// wants `email` where logins are not email addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum OktaUserName {
    /// `profile.login`.
    #[default]
    #[serde(rename = "login")]
    Login,
    /// `profile.email`.
    #[serde(rename = "email")]
    Email,
}

/// The last `X-Rate-Limit-*` an endpoint family answered with.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// `X-Rate-Limit-Limit`, when sent: the family's own ceiling.
    limit: Option<u64>,
    remaining: u64,
    /// `X-Rate-Limit-Reset` as sent (epoch seconds), to order windows.
    reset: u64,
    /// When that is on our clock (see [`reset_delay`]).
    reset_at: tokio::time::Instant,
}

struct Inner {
    settings: OktaSettings,
    /// Pages a listing may take, bytes an answer may hold.
    limits: Limits,
    /// Base URL without a trailing slash.
    base: String,
    transport: tokio::sync::OnceCell<Transport>,
    tokens: TokenCache,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Okta's clock minus ours, from the last answer's `Date` header. `Date` has
    /// one-second resolution and an answer is read after it was dated, so this
    /// underestimates: a cursor built from it is early (more overlap), never late.
    skew: Mutex<Option<chrono::TimeDelta>>,
    /// DPoP for a service app that requires it.
    dpop: Mutex<DpopState>,
}

/// DPoP (RFC 9449) for one connector instance: engaged when the token endpoint
/// first refuses a request for want of a proof.
#[derive(Default)]
struct DpopState {
    /// The ephemeral key the proofs are signed with, made when first needed.
    key: Option<Arc<dpop::DpopKey>>,
    /// The service app requires DPoP: token requests send a proof from the start.
    required: bool,
    /// The latest `DPoP-Nonce` the token endpoint handed out, sent in its proofs.
    token_nonce: Option<String>,
    /// The latest `DPoP-Nonce` the API handed out, sent in its proofs. RFC 9449
    /// scopes a nonce to the server that gave it: the API's never goes to the
    /// token endpoint, nor does a token refresh replace it (each would draw a
    /// `use_dpop_nonce` from the other, spending requests' one resend).
    api_nonce: Option<String>,
}

/// What a request authenticates with.
struct Credential {
    /// The `Authorization` value: `SSWS …`, `Bearer …` or `DPoP …`.
    header: SecretString,
    /// An OAuth token as cached, to drop when the API refuses it.
    cached: Option<SecretString>,
    /// The token alone: scrubbed from errors, and hashed into a proof's `ath`.
    secret: SecretString,
    /// The token is DPoP-bound: every request carries a `DPoP` proof.
    dpop: bool,
}

/// An Okta org; cheap to clone.
#[derive(Clone)]
pub struct OktaSource {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OktaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OktaSource")
            .field("url", &self.inner.base)
            .field("app_id", &self.inner.settings.app_id)
            .finish_non_exhaustive()
    }
}

/// The parts of an Okta user seatwarden reads (`/api/v1/users`); other fields,
/// custom profile attributes included, are skipped while parsing.
#[derive(Deserialize)]
struct RawUser {
    id: String,
    status: String,
    /// The status an asynchronous transition under way leads to: `DEPROVISIONED`
    /// while a deactivation is still deprovisioning the user's apps.
    #[serde(
        default,
        rename = "transitioningToStatus",
        deserialize_with = "lenient_string"
    )]
    transitioning_to_status: Option<String>,
    #[serde(default, rename = "lastUpdated")]
    last_updated: Option<String>,
    #[serde(default)]
    profile: RawProfile,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawProfile {
    #[serde(default, deserialize_with = "lenient_string")]
    login: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    email: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    first_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    last_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    display_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    department: Option<String>,
}

/// What `changes_since` stores in its cursor (after [`CURSOR_PREFIX`]).
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    /// Okta's time when the read that made the cursor started.
    at: DateTime<Utc>,
    /// The groups whose names the configuration uses, as of the last full read:
    /// one renamed or deleted since changes its members' groups (a scope group:
    /// their scope) without touching them. Empty when the configuration names no
    /// group. Absent (an old cursor): not known, so the next call reads in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    groups: Option<Vec<TrackedGroup>>,
    /// The configured group names (folded, sorted) those groups were taken for:
    /// after a reload that names other groups, they say nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    names: Option<Vec<String>>,
}

/// A group of interest as the last full read saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TrackedGroup {
    id: String,
    /// `profile.name`, exactly as read.
    name: String,
}

/// Only an `id` (group members, app assignments).
#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// A profile string that may be null or, in a customised profile, another JSON
/// type: anything but a string reads as absent.
fn lenient_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

impl OktaSource {
    pub fn new(settings: OktaSettings) -> OktaSource {
        OktaSource::with_limits(settings, Limits::default())
    }

    /// [`OktaSource::new`] with other limits than [`Limits::default`]: a listing
    /// that would take more than `limits.max_pages` pages, or an answer longer
    /// than `limits.max_body_bytes`, fails the read as malformed.
    pub fn with_limits(settings: OktaSettings, limits: Limits) -> OktaSource {
        let base = settings.url.as_str().trim_end_matches('/').to_owned();
        OktaSource {
            inner: Arc::new(Inner {
                settings,
                limits,
                base,
                transport: tokio::sync::OnceCell::new(),
                tokens: TokenCache::default(),
                buckets: Mutex::new(HashMap::new()),
                skew: Mutex::new(None),
                dpop: Mutex::new(DpopState::default()),
            }),
        }
    }

    /// Reads the credential file and, for a service app, parses its key, and
    /// checks `ca_file`: what `check-config` can prove without the network.
    pub fn check_files(&self) -> Result<(), DirectoryError> {
        super::remote::ca_pem(self.inner.settings.ca_file.as_deref())?;
        match &self.inner.settings.auth {
            OktaAuth::Ssws(token) => token.read().map(drop),
            OktaAuth::PrivateKeyJwt { private_key, .. } => {
                let pem = private_key.read()?;
                jwt::SigningKey::from_pem(
                    pem.expose_secret().as_bytes(),
                    &private_key.named("directory.private_key_file"),
                )
                .map(drop)
            }
        }
    }

    pub fn url(&self) -> &str {
        &self.inner.base
    }

    /// Requests made so far (retries and token requests included).
    pub fn stats(&self) -> RemoteStats {
        self.inner
            .transport
            .get()
            .map(Transport::stats)
            .unwrap_or_default()
    }

    async fn transport(&self) -> Result<&Transport, DirectoryError> {
        let s = &self.inner.settings;
        let max_body = self.inner.limits.max_body_bytes;
        self.inner
            .transport
            .get_or_try_init(|| async {
                let plain_http = s.url.scheme() == "http";
                Transport::new(
                    s.timeout,
                    s.max_concurrency,
                    0,
                    s.retry,
                    max_body,
                    plain_http,
                    s.ca_file.as_deref(),
                )
            })
            .await
    }

    /// Every user in scope with status and groups, or an error. The user list (a
    /// chain of cursor pages) and the group side (groups, then members, read
    /// concurrently) run at the same time.
    pub async fn snapshot(&self) -> Result<DirectorySnapshot, DirectoryError> {
        Ok(self.snapshot_and_interest().await?.0)
    }

    /// [`OktaSource::snapshot`], and the groups whose names the configuration uses
    /// (none when it names none: every group counts then), sorted by id.
    async fn snapshot_and_interest(
        &self,
    ) -> Result<(DirectorySnapshot, Vec<TrackedGroup>), DirectoryError> {
        let base = &self.inner.base;
        let deprovisioned = encode_component(r#"status eq "DEPROVISIONED""#);
        let people = async {
            futures::try_join!(
                self.list::<RawUser>(format!("{base}/api/v1/users?limit={USERS_LIMIT}")),
                // Okta omits DEPROVISIONED users from a plain list; only a search or a
                // filter shows them.
                self.list::<RawUser>(format!(
                    "{base}/api/v1/users?limit={USERS_LIMIT}&search={deprovisioned}"
                )),
            )
        };
        let memberships = async {
            let groups: Vec<Value> = self
                .list(format!("{base}/api/v1/groups?limit={GROUPS_LIMIT}"))
                .await?;
            let groups = groups
                .iter()
                .map(|g| parse_group(g, "GET /api/v1/groups"))
                .collect::<Result<Vec<_>, _>>()?;
            let wanted = self.groups_of_interest(&groups)?;
            let app_scope = match &self.inner.settings.app_id {
                Some(app) => Some(self.app_assignments(app).await?),
                None => None,
            };
            if let Some((_, app_groups)) = &app_scope {
                remote::check_app_groups_listed("okta", &groups, app_groups, "GET /api/v1/groups")?;
            }
            // Members of the groups the policy names, plus of groups assigned to the app.
            let to_read = remote::groups_to_read(
                &groups,
                &wanted,
                app_scope.as_ref().map(|(_, app_groups)| app_groups),
            );
            let members = self.members_of(&to_read).await?;
            Ok::<_, DirectoryError>((wanted, app_scope, to_read, members))
        };
        let ((users, gone), (wanted, app_scope, to_read, members)) =
            futures::try_join!(people, memberships)?;
        let identities = newest_of_each(users, gone)
            .into_iter()
            .map(|raw| parse_user(raw, "GET /api/v1/users", self.inner.settings.user_name))
            .collect::<Result<Vec<_>, _>>()?;
        let snapshot = remote::assemble_snapshot(
            identities,
            &to_read,
            &members,
            &wanted,
            app_scope.as_ref(),
            // Okta groups do not nest: members are direct.
            None,
        );
        let mut tracked: Vec<TrackedGroup> = if self.interest_names().is_everything() {
            Vec::new()
        } else {
            to_read
                .iter()
                .filter(|(id, _)| wanted.contains(id))
                .map(|(id, name)| TrackedGroup {
                    id: id.clone(),
                    name: name.clone(),
                })
                .collect()
        };
        tracked.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((snapshot, tracked))
    }

    /// What changed since `cursor`: users whose `lastUpdated` is later than the
    /// cursor minus the overlap (status changes included; a filter also shows
    /// DEPROVISIONED users), each with their current groups. Answers with a full
    /// snapshot the first time, for an unreadable cursor, when a group the policy
    /// reads changed membership or name (a removal cannot be seen without the old
    /// member list), and with `app_id` (assignment changes do not touch the user).
    ///
    /// The cursor records the groups of interest (id and name) of the last full
    /// read; each is asked for again (`GET /api/v1/groups/{id}`), and one renamed
    /// or deleted since also answers with a full snapshot: its members' groups
    /// changed without a change to them, and a full read of a configuration whose
    /// scope or required group is gone fails as it should. A cursor without them
    /// (from an older version), or taken for other configured group names, reads
    /// in full once.
    ///
    /// Okta deactivates (DEPROVISIONED) a user before it can be deleted, so a
    /// deletion is normally seen as a deactivation. A changed user whose groups
    /// answer 404 was deleted after the listing if a filter on their id confirms
    /// it (finds nobody), and is reported in `removed`; a 404 that the filter does
    /// not confirm fails the call. A user deactivated *and* deleted between two
    /// calls is only seen by the next full snapshot (as absent).
    pub async fn changes_since(
        &self,
        cursor: Option<&str>,
    ) -> Result<DirectoryChanges, DirectoryError> {
        let started = Utc::now();
        let Some(since) = cursor.and_then(parse_cursor) else {
            if cursor.is_some() {
                tracing::warn!("unreadable Okta cursor; reading the whole directory");
            }
            return self.full_changes(started).await;
        };
        if self.inner.settings.app_id.is_some() {
            return self.full_changes(started).await;
        }
        let interest = self.interest_names();
        let tracked: &[TrackedGroup] = if interest.is_everything() {
            // Every group counts, and any change to one reads in full below.
            &[]
        } else {
            match (&since.groups, &since.names) {
                (Some(groups), Some(names)) if *names == self.configured_names() => groups,
                (Some(_), _) => {
                    tracing::info!(
                        "the configuration names other groups than when the Okta cursor was \
                         taken; reading the whole directory"
                    );
                    return self.full_changes(started).await;
                }
                (None, _) => {
                    tracing::info!(
                        "the Okta cursor does not record the groups of interest (an older \
                         version's); reading the whole directory"
                    );
                    return self.full_changes(started).await;
                }
            }
        };
        let overlap = chrono::Duration::from_std(self.inner.settings.overlap)
            .unwrap_or(chrono::Duration::zero());
        let after = (since.at - overlap).to_rfc3339_opts(SecondsFormat::Millis, true);
        let base = &self.inner.base;
        let group_filter = encode_component(&format!(
            r#"lastUpdated gt "{after}" or lastMembershipUpdated gt "{after}""#
        ));
        let user_filter = encode_component(&format!(r#"lastUpdated gt "{after}""#));
        let (changed_groups, changed_users, moved) = futures::try_join!(
            self.list::<Value>(format!(
                "{base}/api/v1/groups?limit={GROUPS_LIMIT}&filter={group_filter}"
            )),
            self.list::<RawUser>(format!(
                "{base}/api/v1/users?limit={USERS_LIMIT}&filter={user_filter}"
            )),
            self.moved_group(tracked),
        )?;
        if let Some(moved) = moved {
            tracing::info!(group = %moved, "Okta group of interest renamed or deleted; reading the whole directory");
            return self.full_changes(started).await;
        }
        for group in &changed_groups {
            let (_, name) = parse_group(group, "GET /api/v1/groups")?;
            if interest.wants(&name) {
                tracing::info!(group = %name, "Okta group changed; reading the whole directory");
                return self.full_changes(started).await;
            }
        }
        let mut users = Vec::new();
        let mut seen = HashSet::new();
        for raw in changed_users {
            let identity = parse_user(raw, "GET /api/v1/users", self.inner.settings.user_name)?;
            if seen.insert(identity.id.clone()) {
                users.push(identity);
            }
        }
        if users.len() > MAX_DELTA_USERS {
            // One request per changed user would cost more than a snapshot.
            tracing::info!(
                changed = users.len(),
                "many Okta users changed; reading the whole directory"
            );
            return self.full_changes(started).await;
        }
        let concurrency = self.inner.settings.max_concurrency.max(1);
        let read: Vec<Result<Identity, String>> =
            futures::stream::iter(users.into_iter().map(|mut identity| {
                let interest = &interest;
                async move {
                    let url = format!(
                        "{}/api/v1/users/{}/groups",
                        self.inner.base,
                        segment(&identity.id, "GET /api/v1/users/{id}/groups")?
                    );
                    let groups = match self.list(url).await {
                        Ok(groups) => groups,
                        Err(error) if error.status() == Some(404) => {
                            if self.user_is_gone(&identity.id).await? {
                                tracing::info!(
                                    user = %identity.id,
                                    "Okta user deleted since the listing"
                                );
                                return Ok(Err(identity.id));
                            }
                            return Err(error);
                        }
                        Err(error) => return Err(error),
                    };
                    identity.groups =
                        remote::names_of_interest(PROVIDER, &groups, interest, |g| {
                            parse_group(g, "GET /api/v1/users/{id}/groups")
                        })?;
                    Ok::<_, DirectoryError>(Ok(identity))
                }
            }))
            .buffered(concurrency)
            .try_collect()
            .await?;
        let mut changed = Vec::with_capacity(read.len());
        let mut removed = Vec::new();
        for identity in read {
            match identity {
                Ok(identity) => changed.push(identity),
                Err(gone) => removed.push(gone),
            }
        }
        Ok(DirectoryChanges::Delta {
            changed,
            removed,
            cursor: self.cursor_at(started, tracked)?,
        })
    }

    /// A full snapshot for `changes_since`, with a cursor for a read that started
    /// at `started` (our clock) recording the snapshot's groups of interest.
    async fn full_changes(
        &self,
        started: DateTime<Utc>,
    ) -> Result<DirectoryChanges, DirectoryError> {
        let (snapshot, tracked) = self.snapshot_and_interest().await?;
        Ok(DirectoryChanges::Full {
            snapshot,
            cursor: Some(self.cursor_at(started, &tracked)?),
        })
    }

    /// The first of `tracked` that was renamed or deleted since the cursor was
    /// taken (`GET /api/v1/groups/{id}`, 404 for a deleted group), described; any
    /// other failure fails the call.
    async fn moved_group(
        &self,
        tracked: &[TrackedGroup],
    ) -> Result<Option<String>, DirectoryError> {
        const ENDPOINT: &str = "GET /api/v1/groups/{id}";
        let concurrency = self.inner.settings.max_concurrency.max(1);
        // Built before they enter the stream (see `members_of`).
        let pending: Vec<_> = tracked
            .iter()
            .map(|group| async move {
                let url = format!(
                    "{}/api/v1/groups/{}",
                    self.inner.base,
                    segment(&group.id, ENDPOINT)?
                );
                let reply = match self.get(&url, ENDPOINT).await {
                    Ok(reply) => reply,
                    Err(error) if error.status() == Some(404) => {
                        return Ok(Some(format!(
                            "{:?} ({}) no longer exists",
                            group.name, group.id
                        )));
                    }
                    Err(error) => return Err(error),
                };
                let (id, name) = parse_group(&reply.json(ENDPOINT)?, ENDPOINT)?;
                if id != group.id {
                    return Err(DirectoryError::Malformed {
                        endpoint: ENDPOINT.to_owned(),
                        what: format!("asked for group {:?}, got {id:?}", group.id),
                    });
                }
                Ok::<_, DirectoryError>(
                    (name != group.name)
                        .then(|| format!("{:?} ({}) is now named {name:?}", group.name, group.id)),
                )
            })
            .collect();
        let moved: Vec<Option<String>> = futures::stream::iter(pending)
            .buffered(concurrency)
            .try_collect()
            .await?;
        Ok(moved.into_iter().flatten().next())
    }

    /// Whether the user `id` is gone from Okta: a filter on its id (which shows
    /// DEPROVISIONED users too) answers with nobody. A 404 alone is not taken for
    /// a deletion; a filter that cannot be written for the id confirms nothing.
    async fn user_is_gone(&self, id: &str) -> Result<bool, DirectoryError> {
        if id.contains(['"', '\\']) || id.chars().any(char::is_control) {
            return Ok(false);
        }
        let filter = encode_component(&format!(r#"id eq "{id}""#));
        let found: Vec<IdOnly> = self
            .list(format!(
                "{}/api/v1/users?limit={USERS_LIMIT}&filter={filter}",
                self.inner.base
            ))
            .await?;
        Ok(found.is_empty())
    }

    /// The cursor for a read that started at `local` (our clock), in Okta's time,
    /// recording the groups of interest `tracked` and the configured names.
    fn cursor_at(
        &self,
        local: DateTime<Utc>,
        tracked: &[TrackedGroup],
    ) -> Result<String, DirectoryError> {
        let skew = *self
            .inner
            .skew
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let skew = skew.unwrap_or_default();
        let overlap = chrono::TimeDelta::from_std(self.inner.settings.overlap)
            .unwrap_or(chrono::TimeDelta::zero());
        if skew.abs() > overlap {
            tracing::warn!(
                skew_seconds = skew.num_seconds(),
                "this host's clock is off Okta's by more than the delta overlap; the \
                 sweep's cursor follows Okta's clock when it is behind this host's, and \
                 when ahead goes no further than the overlap, re-reading the rest at each \
                 pass (check NTP here, and any proxy between this host and Okta)"
            );
        }
        // Ahead, trusted no further than the overlap the next read steps back:
        // a `Date` wrongly ahead (a proxy stamping its local time as GMT, a clock
        // set wrong) would put the cursor in Okta's future, and every sweep
        // would read nothing new until Okta's clock caught up, leaving the
        // leavers in between to the next reconcile. Behind, it is trusted whole:
        // a cursor too early only re-reads.
        let trusted = skew.min(overlap);
        let json = serde_json::to_string(&Cursor {
            at: local + trusted,
            groups: Some(tracked.to_vec()),
            names: Some(self.configured_names()),
        })
        .map_err(|e| DirectoryError::Malformed {
            endpoint: "delta cursor".into(),
            what: e.to_string(),
        })?;
        Ok(format!("{CURSOR_PREFIX}{json}"))
    }

    fn record_clock(&self, headers: &HeaderMap) {
        let Some(dated) = headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
        else {
            return;
        };
        let skew = DateTime::<Utc>::from(dated) - Utc::now();
        *self
            .inner
            .skew
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(skew);
    }

    fn interest_names(&self) -> GroupInterest {
        let s = &self.inner.settings;
        GroupInterest::new(&s.scope_groups, &s.other_groups, &s.distinct_groups)
    }

    /// The configured group names, folded and sorted, as a cursor records them.
    fn configured_names(&self) -> Vec<String> {
        let s = &self.inner.settings;
        remote::configured_names(&s.scope_groups, &s.other_groups, &s.distinct_groups)
    }

    /// Ids of the groups whose members are read: those the policy names, or all.
    fn groups_of_interest(
        &self,
        groups: &[(String, String)],
    ) -> Result<HashSet<String>, DirectoryError> {
        let s = &self.inner.settings;
        remote::groups_of_interest(
            PROVIDER,
            groups,
            remote::NamedGroups {
                scope_groups: &s.scope_groups,
                other_groups: &s.other_groups,
                required_groups: &s.required_groups,
                distinct_groups: &s.distinct_groups,
            },
            "an Okta group (profile.name)",
            "rename one of them in Okta",
        )
    }

    /// Every group's name (`GET /api/v1/groups`, all pages), for
    /// `check-config --connect` to name the groups that only look like configured
    /// ones ([`super::Directory::group_names`]).
    pub async fn group_names(&self) -> Result<Vec<String>, DirectoryError> {
        let base = &self.inner.base;
        let groups: Vec<Value> = self
            .list(format!("{base}/api/v1/groups?limit={GROUPS_LIMIT}"))
            .await?;
        groups
            .iter()
            .map(|g| parse_group(g, "GET /api/v1/groups").map(|(_, name)| name))
            .collect()
    }

    /// `check-config --connect`: the credential (a service app's token, DPoP-bound
    /// when Okta asks for it) and one small page of each listing a snapshot
    /// reads (users, the DEPROVISIONED users' search, groups, and the app's
    /// assigned users and groups with
    /// `app_id`), through the requests' own path: pacing, retries, and errors
    /// naming the endpoint, the permission missing and Okta's errorId. Each page
    /// is read as a run reads it ([`page_of`], [`parse_user`], [`parse_group`],
    /// [`assigned_ids`]): a user a run would refuse (no `status`, no
    /// `profile.login`) fails the check, naming it. What it proved, one item a
    /// request; no page is followed.
    pub async fn probe(&self) -> Result<Vec<String>, DirectoryError> {
        let base = &self.inner.base;
        let mut proven = Vec::new();
        // Both user listings a snapshot reads: the plain list omits DEPROVISIONED
        // users, so a run also searches for them, and a search refused (a proxy
        // that drops the parameter, an org without the search index) fails a run
        // that the plain list alone would have let pass.
        let deprovisioned = encode_component(r#"status eq "DEPROVISIONED""#);
        for url in [
            format!("{base}/api/v1/users?limit=1"),
            format!("{base}/api/v1/users?limit=1&search={deprovisioned}"),
        ] {
            let (endpoint, users) = self.probe_page::<RawUser>(url).await?;
            for raw in users {
                parse_user(raw, "GET /api/v1/users", self.inner.settings.user_name)?;
            }
            proven.push(endpoint);
        }
        let (endpoint, groups) = self
            .probe_page::<Value>(format!("{base}/api/v1/groups?limit=1"))
            .await?;
        for group in &groups {
            parse_group(group, "GET /api/v1/groups")?;
        }
        proven.push(endpoint);
        if let Some(app) = &self.inner.settings.app_id {
            let app = path_segment(app)
                .map_err(|e| DirectoryError::Settings(format!("directory.app_id: {e}")))?;
            for (listing, endpoint) in [
                ("users", "GET /api/v1/apps/{id}/users"),
                ("groups", "GET /api/v1/apps/{id}/groups"),
            ] {
                let (read, items) = self
                    .probe_page::<Value>(format!("{base}/api/v1/apps/{app}/{listing}?limit=1"))
                    .await?;
                assigned_ids(&items, endpoint)?;
                proven.push(read);
            }
        }
        // Asked after the reads, which fetched it: the token cached is the one used.
        let credential = self.authorization().await?;
        let token = match (&self.inner.settings.auth, credential.dpop) {
            (OktaAuth::Ssws(_), _) => "API token accepted",
            (OktaAuth::PrivateKeyJwt { .. }, true) => "access token (DPoP-bound) issued",
            (OktaAuth::PrivateKeyJwt { .. }, false) => "access token issued",
        };
        proven.insert(0, token.to_owned());
        Ok(proven)
    }

    /// The first page at `url` alone, its items parsed as [`OktaSource::list`]
    /// parses them: the endpoint read and the items.
    async fn probe_page<T: DeserializeOwned>(
        &self,
        url: String,
    ) -> Result<(String, Vec<T>), DirectoryError> {
        let endpoint = endpoint_of("GET", &url);
        let reply = self.get(&url, &endpoint).await?;
        let items = page_of(&reply, &endpoint)?;
        Ok((endpoint, items))
    }

    /// The app's assigned user ids and assigned group ids.
    async fn app_assignments(
        &self,
        app: &str,
    ) -> Result<(HashSet<String>, HashSet<String>), DirectoryError> {
        let base = &self.inner.base;
        let app = path_segment(app)
            .map_err(|e| DirectoryError::Settings(format!("directory.app_id: {e}")))?;
        let (users, groups) = futures::try_join!(
            self.list(format!(
                "{base}/api/v1/apps/{app}/users?limit={APP_USERS_LIMIT}"
            )),
            self.list(format!(
                "{base}/api/v1/apps/{app}/groups?limit={APP_GROUPS_LIMIT}"
            )),
        )?;
        Ok((
            assigned_ids(&users, "GET /api/v1/apps/{id}/users")?,
            assigned_ids(&groups, "GET /api/v1/apps/{id}/groups")?,
        ))
    }

    /// Member ids of each group, in order, read concurrently.
    async fn members_of(
        &self,
        groups: &[(String, String)],
    ) -> Result<Vec<Vec<String>>, DirectoryError> {
        let concurrency = self.inner.settings.max_concurrency.max(1);
        // Built before they enter the stream: a closure in the stream's type trips
        // the compiler's Send inference in spawned callers (rust-lang/rust#102211).
        let pending: Vec<_> = groups
            .iter()
            .map(|(id, _)| async move {
                let url = format!(
                    "{}/api/v1/groups/{}/users?limit={MEMBERS_LIMIT}",
                    self.inner.base,
                    segment(id, "GET /api/v1/groups/{id}/users")?
                );
                let members: Vec<IdOnly> = self.list(url).await?;
                Ok::<_, DirectoryError>(members.into_iter().map(|m| m.id).collect::<Vec<_>>())
            })
            .collect();
        futures::stream::iter(pending)
            .buffered(concurrency)
            .try_collect()
            .await
    }

    /// Every item of a listing, following `Link: rel="next"` to the end, in at
    /// most `limits.max_pages` pages. Items are parsed straight into `T` (a page
    /// is a JSON array of them).
    async fn list<T: DeserializeOwned>(&self, first: String) -> Result<Vec<T>, DirectoryError> {
        let max_pages = self.inner.limits.max_pages;
        let listing = endpoint_of("GET", &first);
        let mut items = Vec::new();
        let mut visited = remote::PagesRead::starting_at(&first);
        let mut url = first;
        let mut pages: u64 = 0;
        loop {
            let endpoint = endpoint_of("GET", &url);
            let reply = self.get(&url, &endpoint).await?;
            pages += 1;
            items.extend(page_of::<T>(&reply, &endpoint)?);
            let next = next_link(&reply.headers).map_err(|what| DirectoryError::Malformed {
                endpoint: endpoint.clone(),
                what,
            })?;
            let Some(next) = next else {
                return Ok(items);
            };
            if !same_origin(&self.inner.base, &next) {
                return Err(DirectoryError::Malformed {
                    endpoint,
                    what: "Link rel=\"next\" points to another origin".to_owned(),
                });
            }
            if !visited.is_new(&next) {
                return Err(DirectoryError::Malformed {
                    endpoint,
                    what: "Link rel=\"next\" repeats a page already read".to_owned(),
                });
            }
            if pages >= max_pages {
                return Err(DirectoryError::Malformed {
                    endpoint,
                    what: page_cap_reached("Link rel=\"next\"", max_pages, &listing),
                });
            }
            url = next;
        }
    }

    /// One GET with pacing, auth and retries; a non-success is an error.
    async fn get(&self, url: &str, endpoint: &str) -> Result<Reply, DirectoryError> {
        let transport = self.transport().await?;
        let bucket = bucket_of(url);
        let mut log = crate::retry::RetryLog::default();
        // Set by an attempt refused for the org's concurrency limit.
        let org_wide = std::sync::atomic::AtomicBool::new(false);
        let outcome = crate::retry::retry(
            transport.retry,
            || self.attempt(transport, url, endpoint, &bucket, &org_wide),
            |e, delay| {
                if org_wide.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    // The limit is the org's, not the family's: every request of
                    // the connector waits as long as the refused one.
                    transport.pause(delay, endpoint, 429);
                }
                transport.note_retry(&mut log, endpoint, e, delay);
            },
        )
        .await;
        log.finished(endpoint, &outcome);
        outcome
    }

    async fn attempt(
        &self,
        transport: &Transport,
        url: &str,
        endpoint: &str,
        bucket: &str,
        org_wide: &std::sync::atomic::AtomicBool,
    ) -> Result<Reply, DirectoryError> {
        let mut refreshed = false;
        let mut nonce_resent = false;
        loop {
            self.pace(bucket).await;
            let credential = self.authorization().await?;
            let mut request = transport
                .http()
                .get(url)
                .header(
                    reqwest::header::AUTHORIZATION,
                    credential.header.expose_secret(),
                )
                .header(reqwest::header::ACCEPT, "application/json");
            if credential.dpop {
                // A proof of its own for every request, a next page's too
                // (`htu` is the URL without the query).
                let proof = self.dpop_proof("GET", url, Some(credential.secret.expose_secret()))?;
                request = request.header("DPoP", proof);
            }
            let reply = transport.send(request, endpoint).await?;
            let fresh_nonce = self.record_nonce(&reply.headers, false);
            let concurrency = reply.status == 429 && self.is_concurrency_refusal(bucket, &reply);
            org_wide.store(concurrency, std::sync::atomic::Ordering::Relaxed);
            if concurrency {
                // Its `X-Rate-Limit-*` are the concurrency limit's, not the
                // family's window: kept there, they would pace the family on the
                // wrong numbers and hide the next such 429.
                tracing::info!(
                    endpoint,
                    "Okta refused a request for the org's concurrency limit (shared with \
                     every other app of the org): every request of the connector waits"
                );
            } else {
                self.record_limits(bucket, &reply.headers);
            }
            self.record_clock(&reply.headers);
            if reply.is_success() {
                return Ok(reply);
            }
            let challenge = dpop::challenge_error(&reply.headers);
            // RFC 9449 §9: a resource server that wants a nonce in the proof
            // answers 401 `WWW-Authenticate: DPoP error="use_dpop_nonce"` with
            // one in `DPoP-Nonce`: resent once with it (and a fresh `jti`). Okta's
            // own APIs do not ask for one today ("The nonce parameter isn't
            // currently required", developer.okta.com/docs/guides/dpop,
            // oktaresourceserver), but may.
            if reply.status == 401
                && credential.dpop
                && fresh_nonce
                && !nonce_resent
                && challenge.as_deref() == Some("use_dpop_nonce")
            {
                nonce_resent = true;
                continue;
            }
            // An OAuth access token can expire or be revoked mid-snapshot: fetch a
            // new one once and repeat the request.
            if reply.status == 401
                && !refreshed
                && let Some(cached) = &credential.cached
            {
                self.inner.tokens.invalidate(cached).await;
                refreshed = true;
                continue;
            }
            let (code, mut detail) = error_body(&reply.body);
            if reply.status == 403 {
                // E0000006 "You do not have permission to perform the requested
                // action" names neither the scope nor the role that is missing.
                detail = format!(
                    "{}; {}",
                    detail.chars().take(120).collect::<String>(),
                    permission_hint(url, credential.cached.is_some())
                );
            }
            if reply.status == 401
                && credential.dpop
                && matches!(
                    challenge.as_deref(),
                    Some("invalid_dpop_proof" | "use_dpop_nonce")
                )
            {
                detail = format!("{detail}; {}", dpop_refused(challenge.as_deref()));
            }
            let wait = wait_before_retry(&reply);
            let secret = credential.secret.expose_secret();
            let error = status_error(endpoint, &reply, code, detail, wait, &[secret]);
            return Err(with_reference(error, &reply));
        }
    }

    /// What the next request authenticates with.
    async fn authorization(&self) -> Result<Credential, DirectoryError> {
        match &self.inner.settings.auth {
            OktaAuth::Ssws(secret) => {
                let token = secret.read()?;
                Ok(Credential {
                    header: SecretString::from(format!("SSWS {}", token.expose_secret())),
                    cached: None,
                    secret: token,
                    dpop: false,
                })
            }
            OktaAuth::PrivateKeyJwt {
                client_id,
                key_id,
                private_key,
            } => {
                let token = self
                    .inner
                    .tokens
                    .get(|| self.fetch_token(client_id, key_id.as_deref(), private_key))
                    .await?;
                // Cached with its scheme ([`Self::fetch_token`]).
                let (scheme, secret) = token
                    .expose_secret()
                    .split_once(' ')
                    .unwrap_or(("Bearer", token.expose_secret()));
                Ok(Credential {
                    header: token.clone(),
                    secret: SecretString::from(secret.to_owned()),
                    dpop: scheme == "DPoP",
                    cached: Some(token),
                })
            }
        }
    }

    /// A token for the service app, with its scheme: `Bearer <token>`, or
    /// `DPoP <token>` when Okta bound it to [`DpopState::key`] (`token_type:
    /// DPoP`).
    ///
    /// DPoP engages by itself: a request without a proof refused with
    /// `invalid_dpop_proof` ("The DPoP proof JWT header is missing.") is sent
    /// again with one, and every later one of this instance carries one from the
    /// start. Okta's token endpoint always wants a nonce in the proof: the first
    /// proof draws 400 `use_dpop_nonce` with a `DPoP-Nonce` header, and the
    /// request is sent again with it (a stale nonce later, the same). Each resend
    /// is at most once, with a fresh proof and a fresh client assertion: Okta
    /// refuses a `jti` it has seen.
    async fn fetch_token(
        &self,
        client_id: &str,
        key_id: Option<&str>,
        private_key: &Secret,
    ) -> Result<(SecretString, Duration), DirectoryError> {
        let transport = self.transport().await?;
        let token_url = format!("{}/oauth2/v1/token", self.inner.base);
        let pem = private_key.read()?;
        let key = jwt::SigningKey::from_pem(
            pem.expose_secret().as_bytes(),
            &private_key.named("directory.private_key_file"),
        )?;
        // The token endpoint has its own rate limit (`/oauth2/v1/token`), with
        // the same headers as the API's: paced, and a 429 waited out until its
        // `X-Rate-Limit-Reset` (it sends no `Retry-After`), as API calls are.
        // On the plain backoff, the retries ran out within seconds of a
        // window that resets up to a minute later.
        let bucket = bucket_of(&token_url);
        let mut with_proof = self.dpop_state(|state| state.required);
        let (mut proof_added, mut nonce_resent) = (false, false);
        loop {
            let mut header = serde_json::Map::new();
            if let Some(kid) = key_id {
                header.insert("kid".into(), kid.into());
            }
            let claims = jwt::assertion_claims(client_id, &token_url, jwt::unix_now())?;
            let assertion = key.sign(header, &claims)?;
            let proof = match with_proof {
                true => Some(self.dpop_proof("POST", &token_url, None)?),
                false => None,
            };
            self.pace(&bucket).await;
            let reply = remote::request_token_with(
                transport,
                &token_url,
                &[
                    ("grant_type", "client_credentials"),
                    (
                        "scope",
                        match self.inner.settings.app_id {
                            Some(_) => OAUTH_SCOPES_WITH_APP,
                            None => OAUTH_SCOPES,
                        },
                    ),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &assertion),
                ],
                &proof
                    .as_deref()
                    .map(|p| ("DPoP", p))
                    .into_iter()
                    .collect::<Vec<_>>(),
            )
            .await?;
            self.record_limits(&bucket, &reply.headers);
            let fresh_nonce = self.record_nonce(&reply.headers, true);
            if !reply.is_success() {
                match oauth_error(&reply.body).as_deref() {
                    Some("invalid_dpop_proof") if proof.is_none() && !proof_added => {
                        tracing::info!(
                            client_id,
                            "the Okta service app requires DPoP: its token requests carry \
                             a DPoP proof from now on"
                        );
                        self.dpop_state(|state| state.required = true);
                        (with_proof, proof_added) = (true, true);
                        continue;
                    }
                    Some("use_dpop_nonce") if proof.is_some() && fresh_nonce && !nonce_resent => {
                        nonce_resent = true;
                        continue;
                    }
                    _ => {}
                }
            }
            let (token, lifetime) =
                remote::token_from(&token_url, &reply, &[&assertion], wait_before_retry(&reply))
                    .map_err(|e| with_reference(dpop_hint(e, proof.is_some()), &reply))?;
            // RFC 9449 §5: `token_type: DPoP` says the token is bound to the key.
            let bound = serde_json::from_str::<Value>(&reply.body)
                .ok()
                .and_then(|v| v.get("token_type")?.as_str().map(str::to_owned))
                .is_some_and(|t| t.eq_ignore_ascii_case("DPoP"));
            let scheme = if bound { "DPoP" } else { "Bearer" };
            return Ok((
                SecretString::from(format!("{scheme} {}", token.expose_secret())),
                lifetime,
            ));
        }
    }

    /// `f` on the DPoP state.
    fn dpop_state<T>(&self, f: impl FnOnce(&mut DpopState) -> T) -> T {
        f(&mut self
            .inner
            .dpop
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// A DPoP proof for `method` `url` (bound to `access_token` on a resource
    /// request), with the latest nonce of the server it goes to, dated by Okta's clock when known.
    fn dpop_proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
    ) -> Result<String, DirectoryError> {
        let (key, nonce) = self.dpop_state(|state| -> Result<_, DirectoryError> {
            let key = match &state.key {
                Some(key) => key.clone(),
                None => state
                    .key
                    .insert(Arc::new(dpop::DpopKey::generate()?))
                    .clone(),
            };
            let nonce = match access_token {
                // A resource request: the API's own nonce once it gave one.
                Some(_) => state.api_nonce.as_ref().or(state.token_nonce.as_ref()),
                None => state.token_nonce.as_ref(),
            };
            Ok((key, nonce.cloned()))
        })?;
        key.proof(
            method,
            url,
            access_token,
            nonce.as_deref(),
            self.okta_unix_now(),
        )
    }

    /// Keeps the `DPoP-Nonce` of an answer (RFC 9449 §8: a server may hand out a
    /// new one with any answer), the token endpoint's (`from_token_endpoint`) or
    /// the API's ([`DpopState::api_nonce`]); true when there was one. Until the
    /// API hands out one of its own, its proofs carry the token endpoint's, as
    /// Okta's own SDKs keep a single nonce and send the token endpoint's to the
    /// API too (okta-sdk-golang `generateDpopJWT`, okta-sdk-python
    /// `DPoPProofGenerator`), which Okta's API accepts while it requires none.
    fn record_nonce(&self, headers: &HeaderMap, from_token_endpoint: bool) -> bool {
        let Some(nonce) = dpop::nonce_of(headers) else {
            return false;
        };
        self.dpop_state(|state| match from_token_endpoint {
            true => state.token_nonce = Some(nonce),
            false => state.api_nonce = Some(nonce),
        });
        true
    }

    /// Now on Okta's clock, as far as its `Date` headers tell ([`Inner::skew`]):
    /// a proof's `iat` from a host clock that is off would be refused.
    fn okta_unix_now(&self) -> u64 {
        let skew = self
            .inner
            .skew
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map_or(0, |s| s.num_seconds());
        let now = i64::try_from(jwt::unix_now()).unwrap_or(i64::MAX);
        u64::try_from(now.saturating_add(skew)).unwrap_or(0)
    }

    /// Waits for the rate-limit window to reset when the endpoint family has
    /// fewer requests left than may be in flight at once.
    async fn pace(&self, bucket: &str) {
        let reserve = self.inner.settings.max_concurrency as u64;
        let wait = {
            let buckets = self
                .inner
                .buckets
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            buckets.get(bucket).and_then(|b| {
                if b.remaining > reserve {
                    return None;
                }
                b.reset_at
                    .checked_duration_since(tokio::time::Instant::now())
                    .filter(|w| !w.is_zero())
            })
        };
        if let Some(wait) = wait {
            tracing::debug!(
                bucket,
                ?wait,
                "Okta rate limit nearly used; waiting for the reset"
            );
            // A reset more than a minute away is not a per-minute window; cap it.
            tokio::time::sleep(wait.min(Duration::from_secs(61))).await;
            let mut buckets = self
                .inner
                .buckets
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if buckets
                .get(bucket)
                .is_some_and(|b| b.reset_at <= tokio::time::Instant::now())
            {
                buckets.remove(bucket);
            }
        }
    }

    /// Whether a 429 is for the org's concurrency limit rather than the endpoint
    /// family's rate limit. Okta sends the same `X-Rate-Limit-*` headers with
    /// both, but with the concurrency limit's values in place of the family's
    /// window: an `X-Rate-Limit-Limit` that is not the one the family answered
    /// with before is taken for it, and so is one from a family not heard from
    /// yet (the concurrency limit refuses the first requests of many at once).
    fn is_concurrency_refusal(&self, bucket: &str, reply: &Reply) -> bool {
        let Some(limit) = header_number(&reply.headers, "x-rate-limit-limit") else {
            return false;
        };
        let buckets = self
            .inner
            .buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        buckets.get(bucket).and_then(|b| b.limit) != Some(limit)
    }

    fn record_limits(&self, bucket: &str, headers: &HeaderMap) {
        let number = |name: &str| header_number(headers, name);
        let (Some(remaining), Some(reset), Some(wait)) = (
            number("x-rate-limit-remaining"),
            number("x-rate-limit-reset"),
            reset_delay(headers),
        ) else {
            return;
        };
        let fresh = Bucket {
            limit: number("x-rate-limit-limit"),
            remaining,
            reset,
            reset_at: tokio::time::Instant::now() + wait,
        };
        let mut buckets = self
            .inner
            .buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = buckets.entry(bucket.to_owned()).or_insert(fresh);
        // Answers arrive out of order under concurrency: a later window wins, and
        // within one window the lowest count.
        if reset > entry.reset {
            *entry = fresh;
        } else if reset == entry.reset {
            entry.remaining = entry.remaining.min(remaining);
        }
    }
}

/// A header holding a whole number (`X-Rate-Limit-*`).
fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// `id` as one path segment of `endpoint`, or a malformed answer: an id Okta
/// handed out that is empty or a dot segment would send the request elsewhere
/// (`/api/v1/groups/../users` is `/api/v1/users`, everyone as members).
fn segment(id: &str, endpoint: &str) -> Result<String, DirectoryError> {
    path_segment(id).map_err(|e| DirectoryError::Malformed {
        endpoint: endpoint.to_owned(),
        what: e.to_string(),
    })
}

/// What a 403 from Okta for `url` asks of the credential: a service app
/// (`oauth`) needs the read's scope granted and an admin role that may read it;
/// an API token acts with the role of the admin who created it.
fn permission_hint(url: &str, oauth: bool) -> String {
    let path = url::Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_default();
    let (scope, what) = if path.starts_with("/api/v1/apps") {
        ("okta.apps.read", "app assignments (directory.app_id)")
    } else if path.starts_with("/api/v1/groups") {
        ("okta.groups.read", "groups and their members")
    } else {
        ("okta.users.read", "users")
    };
    if oauth {
        format!(
            "the service app (directory.client_id) needs the scope {scope} granted and an \
             admin role that can read {what} (Read-only Administrator can)"
        )
    } else {
        format!(
            "the API token acts with the admin role of whoever created it, which must be \
             able to read {what} (Read-only Administrator can)"
        )
    }
}

/// The endpoint family an Okta rate limit applies to: `/api/v1/users`,
/// `/api/v1/groups/*/users`, … (ids replaced by `*`). An app's users and its
/// groups are one family, `api/v1/apps*`: Okta counts every `/api/v1/apps/{id}/…`
/// call in one bucket ("all other endpoints of the form /api/v1/apps*",
/// developer.okta.com/docs/reference/rl-global-mgmt), so its remaining count
/// is one budget, not two that each look half used.
fn bucket_of(url: &str) -> String {
    let path = url::Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let ["api", "v1", "apps", _, _, ..] = segments.as_slice() {
        return "api/v1/apps*".to_owned();
    }
    // api / v1 / resource / id / sub / id …
    segments
        .iter()
        .enumerate()
        .map(|(i, s)| if i >= 3 && i % 2 == 1 { "*" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// The least wait before an answer that is not a success is asked again: a 429
/// until `X-Rate-Limit-Reset` (Okta sends no `Retry-After` with it), else the
/// `Retry-After` there is.
fn wait_before_retry(reply: &Reply) -> Option<Duration> {
    if reply.status == 429 {
        reset_delay(&reply.headers).or_else(|| remote::retry_after(&reply.headers))
    } else {
        remote::retry_after(&reply.headers)
    }
}

/// How long until `X-Rate-Limit-Reset` (UTC epoch seconds). Measured against the
/// answer's `Date` header when there is one, so a skewed local clock neither
/// shortens the wait (and hammers Okta) nor stretches it; `Date` has one-second
/// resolution, which can only lengthen the wait.
fn reset_delay(headers: &HeaderMap) -> Option<Duration> {
    let reset: u64 = headers
        .get("x-rate-limit-reset")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let server_now = crate::http::server_time(headers);
    // Okta's windows are a minute long: a reset further away than this is a
    // broken header, and must neither overflow the clock arithmetic nor park a run.
    let reset_at = UNIX_EPOCH.checked_add(Duration::from_secs(reset))?;
    Some(
        reset_at
            .duration_since(server_now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RESET_WAIT),
    )
}

const MAX_RESET_WAIT: Duration = Duration::from_secs(300);

/// The `rel="next"` target among all `Link` header lines; each line may hold
/// several comma-separated links. A line that cannot be read is an error, not "no
/// next page": taken as the end, it would make a cut listing look whole, and the
/// people on the pages not read look deleted.
fn next_link(headers: &HeaderMap) -> Result<Option<String>, String> {
    for value in headers.get_all(reqwest::header::LINK) {
        let value = value
            .to_str()
            .map_err(|_| "a Link header that is not visible ASCII".to_owned())?;
        for link in split_links(value) {
            let link = link.trim();
            if link.is_empty() {
                continue;
            }
            let Some((target, params)) =
                link.strip_prefix('<').and_then(|rest| rest.split_once('>'))
            else {
                return Err(format!(
                    "a Link header entry not of the form <URL>; rel=\"…\": {:?}",
                    remote::body_excerpt(link)
                ));
            };
            let target = target.trim();
            let is_next = params.split(';').any(|p| {
                let p = p.trim();
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("rel")
                        && v.trim()
                            .trim_matches('"')
                            .split_ascii_whitespace()
                            .any(|r| r.eq_ignore_ascii_case("next"))
                })
            });
            if is_next {
                return Ok(Some(target.to_owned()));
            }
        }
    }
    Ok(None)
}

/// Splits a comma-joined `Link` value at the commas that start a new `<…>`, so a
/// comma inside a URL stays put.
fn split_links(value: &str) -> Vec<String> {
    let mut links: Vec<String> = Vec::new();
    for piece in value.split(',') {
        match links.last_mut() {
            Some(last) if !piece.trim_start().starts_with('<') => {
                last.push(',');
                last.push_str(piece);
            }
            _ => links.push(piece.to_owned()),
        }
    }
    links
}

/// The plain listing and the DEPROVISIONED search run side by side: a user
/// deactivated between them is in both, ACTIVE in one. The copy Okta changed last
/// wins (`lastUpdated`); when that cannot tell, the DEPROVISIONED one, so a leaver
/// never looks active for a run.
fn newest_of_each(listed: Vec<RawUser>, deprovisioned: Vec<RawUser>) -> Vec<RawUser> {
    let updated = |u: &RawUser| {
        u.last_updated
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    };
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut users: Vec<RawUser> = Vec::with_capacity(listed.len() + deprovisioned.len());
    for user in listed {
        if !by_id.contains_key(&user.id) {
            by_id.insert(user.id.clone(), users.len());
            users.push(user);
        }
    }
    for user in deprovisioned {
        match by_id.get(&user.id) {
            Some(&i) => {
                if let Some(kept) = users.get_mut(i) {
                    let listed_is_newer = matches!(
                        (updated(kept), updated(&user)),
                        (Some(a), Some(b)) if a > b
                    );
                    if !listed_is_newer {
                        *kept = user;
                    }
                }
            }
            None => {
                by_id.insert(user.id.clone(), users.len());
                users.push(user);
            }
        }
    }
    users
}

/// Okta's error body: `{"errorCode":"E0000047","errorSummary":"…",
/// "errorCauses":[{"errorSummary":"…"}]}`. The causes say what the summary does
/// not (which parameter a 400 `E0000031` "Invalid search criteria." refused), so
/// they follow it.
fn error_body(body: &str) -> (Option<String>, String) {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = parsed
        .get("errorCode")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let summary = parsed
        .get("errorSummary")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let causes: Vec<&str> = parsed
        .get("errorCauses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|cause| cause.get("errorSummary").and_then(Value::as_str))
        .map(str::trim)
        .filter(|cause| !cause.is_empty())
        .collect();
    let detail = match (summary, causes.is_empty()) {
        (Some(summary), false) => format!("{summary} ({})", causes.join("; ")),
        (Some(summary), true) => summary,
        (None, _) => remote::body_excerpt(body),
    };
    (code, detail)
}

/// Okta's identifiers of a refused request, which an Okta support case asks for
/// and which find the request in the System Log (`debugContext.debugData.requestId`):
/// the error body's `errorId` and the answer's `X-Okta-Request-Id` header (the
/// token endpoint's OAuth error body has no `errorId`; a proxy's answer has
/// neither).
fn okta_reference(reply: &Reply) -> Option<String> {
    let parsed: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
    let error_id = parsed
        .get("errorId")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let request_id = reply
        .headers
        .get("x-okta-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    if error_id.is_none() && request_id.is_none() {
        return None;
    }
    Some(remote::reference_text(&[
        ("errorId", error_id),
        ("X-Okta-Request-Id", request_id),
    ]))
}

/// `error` with Okta's identifiers of `reply` ([`okta_reference`]) after its
/// detail, which [`status_error`] cut to length first: they are never what is cut.
fn with_reference(error: DirectoryError, reply: &Reply) -> DirectoryError {
    match okta_reference(reply) {
        Some(reference) => {
            remote::with_detail(error, |detail| format!("{detail} (Okta {reference})"))
        }
        None => error,
    }
}

/// The `error` of an OAuth error body (RFC 6749 §5.2).
fn oauth_error(body: &str) -> Option<String> {
    let parsed: Value = serde_json::from_str(body).ok()?;
    parsed.get("error")?.as_str().map(str::to_owned)
}

/// A token request refused over DPoP (RFC 9449) says what can be at fault.
/// Without a proof, seatwarden sends one again by itself
/// ([`OktaSource::fetch_token`]): what still fails here is a proof Okta refused
/// (`proof_sent`), or a refusal that came back after the one resend.
fn dpop_hint(error: DirectoryError, proof_sent: bool) -> DirectoryError {
    let code = match &error {
        DirectoryError::Status {
            code: Some(code), ..
        } if code == "invalid_dpop_proof" || code == "use_dpop_nonce" => code.clone(),
        _ => return error,
    };
    remote::with_detail(error, |detail| {
        let hint = match proof_sent {
            true => dpop_refused(Some(&code)),
            false => format!(
                "Okta answered {code} to a token request without a DPoP proof, which \
                 seatwarden adds only after a refusal for want of one (invalid_dpop_proof)"
            ),
        };
        format!("{detail}; {hint}")
    })
}

/// What a refused DPoP proof (`invalid_dpop_proof`), or a nonce asked for again
/// after seatwarden resent with the one Okta gave (`use_dpop_nonce`), leaves to
/// check.
fn dpop_refused(code: Option<&str>) -> String {
    let cause = match code {
        Some("use_dpop_nonce") => {
            "Okta asked for a new DPoP nonce again after seatwarden resent the request with \
             the one it gave"
        }
        _ => "Okta refused seatwarden's DPoP proof",
    };
    format!(
        "{cause}: a proxy between seatwarden and Okta must pass the DPoP and DPoP-Nonce \
         headers unchanged, and the host's clock must be right (the proof's iat)"
    )
}

/// Okta user status → normalised status (see the module comment).
///
/// A user whose deactivation is under way (`transitioningToStatus:
/// DEPROVISIONED`) is deprovisioned whatever `status` still says: Okta
/// deactivates asynchronously, the user stays ACTIVE (and out of the
/// DEPROVISIONED search) until every app is deprovisioned, which can take a
/// while, and a deactivation cannot be undone. Read as active, the leaver would
/// keep the workspace for as long. Other transitions (an activation) wait for
/// their outcome.
pub fn map_status(status: &str, transitioning_to: Option<&str>) -> IdentityStatus {
    if transitioning_to.is_some_and(|t| t.trim() == "DEPROVISIONED") {
        return IdentityStatus::Deprovisioned;
    }
    match status {
        "ACTIVE" | "PROVISIONED" | "RECOVERY" | "PASSWORD_EXPIRED" | "LOCKED_OUT" => {
            IdentityStatus::Active
        }
        "STAGED" | "SUSPENDED" => IdentityStatus::Suspended,
        "DEPROVISIONED" => IdentityStatus::Deprovisioned,
        other => {
            tracing::warn!(
                status = other,
                "unknown Okta user status; treating as suspended"
            );
            IdentityStatus::Suspended
        }
    }
}

fn parse_user(
    raw: RawUser,
    endpoint: &str,
    user_name: OktaUserName,
) -> Result<Identity, DirectoryError> {
    let clean = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let profile = raw.profile;
    let email = clean(profile.email);
    let login = clean(profile.login);
    // A user without an email (Okta allows one only where the profile does not
    // require it) keeps the login as the userName: failing the read for one
    // account, in scope or not, would stop every leaver's deprovisioning.
    let user_name = match (user_name, &email) {
        (OktaUserName::Email, Some(email)) => Some(email.clone()),
        (OktaUserName::Email, None) => {
            tracing::debug!(user = %raw.id, "no profile.email: the userName is profile.login");
            login
        }
        (OktaUserName::Login, _) => login,
    }
    .ok_or_else(|| DirectoryError::Malformed {
        endpoint: endpoint.to_owned(),
        what: format!("user {:?} has no profile.login", raw.id),
    })?;
    if raw.id.is_empty() {
        return Err(DirectoryError::Malformed {
            endpoint: endpoint.to_owned(),
            what: "a user has an empty id".to_owned(),
        });
    }
    Ok(Identity {
        id: raw.id,
        user_name,
        email,
        given_name: clean(profile.first_name),
        family_name: clean(profile.last_name),
        display_name: clean(profile.display_name),
        status: map_status(&raw.status, raw.transitioning_to_status.as_deref()),
        department: clean(profile.department),
        groups: Vec::new(),
    })
}

/// The items of one page of a listing (a JSON array of them), each parsed into
/// `T`: an item `T` cannot be made from (a user without `status`) fails the page.
fn page_of<T: DeserializeOwned>(reply: &Reply, endpoint: &str) -> Result<Vec<T>, DirectoryError> {
    serde_json::from_str(&reply.body)
        .map_err(|e| reply.not_json(endpoint, format!("expected a JSON array of objects: {e}")))
}

/// The ids of an app's assigned users or groups (`endpoint`).
fn assigned_ids(items: &[Value], endpoint: &str) -> Result<HashSet<String>, DirectoryError> {
    items
        .iter()
        .map(|v| required_str(v, "id", endpoint).map(str::to_owned))
        .collect()
}

/// A group's id and `profile.name`.
fn parse_group(v: &Value, endpoint: &str) -> Result<(String, String), DirectoryError> {
    let id = required_str(v, "id", endpoint)?;
    let name = v
        .get("profile")
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| DirectoryError::Malformed {
            endpoint: endpoint.to_owned(),
            what: format!("group {id:?} has no profile.name"),
        })?;
    Ok((id.to_owned(), name.to_owned()))
}

/// A cursor as [`OktaSource::cursor_at`] writes it, or an old one (the time
/// alone, no groups recorded); `None` when it is neither.
fn parse_cursor(cursor: &str) -> Option<Cursor> {
    if let Some(json) = cursor.strip_prefix(CURSOR_PREFIX) {
        return serde_json::from_str(json).ok();
    }
    let at = cursor.strip_prefix(OLD_CURSOR_PREFIX)?;
    DateTime::parse_from_rfc3339(at).ok().map(|t| Cursor {
        at: t.with_timezone(&Utc),
        groups: None,
        names: None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use reqwest::header::{HeaderValue, LINK};

    #[test]
    fn next_link_from_separate_lines_or_one_joined_line() {
        let mut separate = HeaderMap::new();
        separate.append(
            LINK,
            HeaderValue::from_static("<https://a.okta.com/api/v1/users?limit=2>; rel=\"self\""),
        );
        separate.append(
            LINK,
            HeaderValue::from_static(
                "<https://a.okta.com/api/v1/users?after=00u2&limit=2>; rel=\"next\"",
            ),
        );
        assert_eq!(
            next_link(&separate).unwrap().as_deref(),
            Some("https://a.okta.com/api/v1/users?after=00u2&limit=2")
        );
        let mut joined = HeaderMap::new();
        joined.insert(
            LINK,
            HeaderValue::from_static(
                "<https://a.okta.com/api/v1/users?limit=2>; rel=\"self\", \
                 <https://a.okta.com/api/v1/users?after=a,b&limit=2>; rel=\"next\"",
            ),
        );
        assert_eq!(
            next_link(&joined).unwrap().as_deref(),
            Some("https://a.okta.com/api/v1/users?after=a,b&limit=2")
        );
        let mut last = HeaderMap::new();
        last.insert(
            LINK,
            HeaderValue::from_static("<https://a.okta.com/api/v1/users?limit=2>; rel=\"self\""),
        );
        assert_eq!(next_link(&last), Ok(None));
        // Cut or mangled on the way (a proxy): an error, never "the last page".
        for mangled in [
            "https://a.okta.com/api/v1/users?after=00u2; rel=\"next\"",
            "<https://a.okta.com/api/v1/users?after=00u2; rel=\"next\"",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(LINK, HeaderValue::from_static(mangled));
            assert!(next_link(&headers).is_err(), "{mangled}");
        }
        let mut opaque = HeaderMap::new();
        opaque.insert(
            LINK,
            HeaderValue::from_bytes(b"<https://a.okta.com/\xff>; rel=\"next\"").unwrap(),
        );
        assert!(next_link(&opaque).is_err());
    }

    #[test]
    fn buckets_group_endpoints_by_family() {
        assert_eq!(
            bucket_of("https://a/api/v1/users?limit=200"),
            "api/v1/users"
        );
        assert_eq!(
            bucket_of("https://a/api/v1/groups/00g1/users?limit=1000"),
            "api/v1/groups/*/users"
        );
        assert_eq!(
            bucket_of("https://a/api/v1/users/00u1/groups"),
            "api/v1/users/*/groups"
        );
        // One Okta bucket for an app's users and groups.
        assert_eq!(
            bucket_of("https://a/api/v1/apps/0oa1/users?limit=500"),
            "api/v1/apps*"
        );
        assert_eq!(
            bucket_of("https://a/api/v1/apps/0oa1/groups?limit=200"),
            "api/v1/apps*"
        );
    }

    #[test]
    fn the_reset_is_measured_against_the_server_clock() {
        let mut headers = HeaderMap::new();
        headers.insert("x-rate-limit-reset", HeaderValue::from_static("1796004030"));
        // Reset at 2026-11-30T02:00:30Z: a minute after Okta's Date, whatever the
        // local clock says.
        headers.insert(
            reqwest::header::DATE,
            HeaderValue::from_static("Mon, 30 Nov 2026 01:59:30 GMT"),
        );
        assert_eq!(reset_delay(&headers), Some(Duration::from_secs(60)));
        headers.insert(
            reqwest::header::DATE,
            HeaderValue::from_static("Mon, 30 Nov 2026 02:01:00 GMT"),
        );
        assert_eq!(reset_delay(&headers), Some(Duration::ZERO));
        // A reset years (or past the end of time) away: capped, no overflow.
        for far in ["4102444800", "18446744073709551615"] {
            headers.insert("x-rate-limit-reset", HeaderValue::from_static(far));
            let delay = reset_delay(&headers);
            assert!(
                delay.is_none_or(|d| d <= Duration::from_secs(300)),
                "{far}: {delay:?}"
            );
        }
    }

    #[test]
    fn a_user_in_both_listings_counts_as_its_newest_copy() {
        let raw = |id: &str, status: &str, updated: Option<&str>| -> RawUser {
            serde_json::from_value(serde_json::json!({
                "id": id, "status": status, "lastUpdated": updated,
                "profile": {"login": format!("{id}@example.com")}
            }))
            .unwrap()
        };
        let t1 = Some("2026-12-01T10:00:00.000Z");
        let t2 = Some("2026-12-01T10:00:05.000Z");
        let status_of = |users: Vec<RawUser>, id: &str| {
            let found: Vec<String> = users
                .into_iter()
                .filter(|u| u.id == id)
                .map(|u| u.status)
                .collect();
            assert_eq!(found.len(), 1, "{id}: {found:?}");
            found[0].clone()
        };
        // Deactivated while the listings ran: the search's copy is newer.
        let merged = newest_of_each(
            vec![raw("a", "ACTIVE", t1), raw("b", "ACTIVE", t1)],
            vec![raw("a", "DEPROVISIONED", t2), raw("c", "DEPROVISIONED", t1)],
        );
        assert_eq!(merged.len(), 3);
        assert_eq!(status_of(merged, "a"), "DEPROVISIONED");
        // Reactivated in between: the listing's copy is newer.
        let merged = newest_of_each(
            vec![raw("a", "PROVISIONED", t2)],
            vec![raw("a", "DEPROVISIONED", t1)],
        );
        assert_eq!(status_of(merged, "a"), "PROVISIONED");
        // Cannot tell: the leaver does not look active.
        for (listed, searched) in [(t1, t1), (None, t2), (t2, None)] {
            let merged = newest_of_each(
                vec![raw("a", "ACTIVE", listed)],
                vec![raw("a", "DEPROVISIONED", searched)],
            );
            assert_eq!(
                status_of(merged, "a"),
                "DEPROVISIONED",
                "{listed:?} {searched:?}"
            );
        }
    }

    #[test]
    fn status_mapping() {
        for s in [
            "ACTIVE",
            "PROVISIONED",
            "RECOVERY",
            "PASSWORD_EXPIRED",
            "LOCKED_OUT",
        ] {
            assert_eq!(map_status(s, None), IdentityStatus::Active, "{s}");
        }
        assert_eq!(map_status("STAGED", None), IdentityStatus::Suspended);
        assert_eq!(map_status("SUSPENDED", None), IdentityStatus::Suspended);
        assert_eq!(
            map_status("DEPROVISIONED", None),
            IdentityStatus::Deprovisioned
        );
        assert_eq!(map_status("SOMETHING_NEW", None), IdentityStatus::Suspended);
    }

    /// Okta's deactivation is asynchronous: until it has deprovisioned every app,
    /// the user is still ACTIVE (or whatever they were) with
    /// `transitioningToStatus: DEPROVISIONED`. It cannot be undone, so they are a
    /// leaver now; an activation under way waits for its outcome.
    #[test]
    fn a_deactivation_under_way_is_deprovisioned_already() {
        for status in ["ACTIVE", "LOCKED_OUT", "PASSWORD_EXPIRED", "SUSPENDED"] {
            assert_eq!(
                map_status(status, Some("DEPROVISIONED")),
                IdentityStatus::Deprovisioned,
                "{status}"
            );
        }
        assert_eq!(
            map_status("DEPROVISIONED", Some("ACTIVE")),
            IdentityStatus::Deprovisioned
        );
        assert_eq!(
            map_status("PROVISIONED", Some("ACTIVE")),
            IdentityStatus::Active
        );
    }

    #[test]
    fn cursors_round_trip() {
        // An old cursor: the time alone, no groups recorded.
        let old = parse_cursor("okta-v1:2026-11-30T01:00:00.000Z").unwrap();
        assert_eq!(
            old.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "2026-11-30T01:00:00.000Z"
        );
        assert!(old.groups.is_none() && old.names.is_none());
        let cursor = Cursor {
            at: old.at,
            groups: Some(vec![TrackedGroup {
                id: "00g1".into(),
                name: "Taskade Users".into(),
            }]),
            names: Some(vec!["taskade users".into()]),
        };
        let written = format!("{CURSOR_PREFIX}{}", serde_json::to_string(&cursor).unwrap());
        let read = parse_cursor(&written).unwrap();
        assert_eq!(read.at, cursor.at);
        assert_eq!(read.groups, cursor.groups);
        assert_eq!(read.names, cursor.names);
        assert!(parse_cursor("garbage").is_none());
        assert!(parse_cursor("okta-v2:{not json").is_none());
    }
}
