//! Microsoft Entra ID (`kind = "entra"`) through Microsoft Graph v1.0, read-only.
//!
//! - Auth: OAuth 2.0 client credentials at `{login_url}/{tenant}/oauth2/v2.0/token`
//!   with a client secret or a certificate (an RS256 client assertion with the
//!   certificate's `x5t` thumbprint), scope `https://graph.microsoft.com/.default`.
//!   The token is cached, refreshed five minutes before it expires, and once more
//!   after a 401.
//! - Users: `GET /users?$select=…&$top=999`; `accountEnabled` is only returned when
//!   selected. Paging follows `@odata.nextLink` until it is absent, for at most
//!   [`Limits::max_pages`] pages (a delta round too); a link to another origin or
//!   back to a page already read (the first one too) is an error, never read
//!   again, as is a link that is not a string (never taken for the last page), or a
//!   `groups/delta` item's `members@delta` that is not an array or `displayName`
//!   not a string (never taken for "unchanged"); an answer longer than
//!   [`Limits::max_body_bytes`] is an error, and an id that is empty or a dot
//!   segment is never put in a path.
//! - Groups: `GET /groups`; members from `/groups/{id}/transitiveMembers` (nested
//!   groups count; devices, service principals, contacts and the nested groups
//!   themselves are left out by `@odata.type`, not by an OData cast, which Graph
//!   takes for an advanced query) for the groups the configuration
//!   names (scope, mappings, `safety.protected_groups`; every group when it names
//!   none). With `app_id`, the snapshot keeps only the
//!   users the app's service principal is assigned to (`appRoleAssignedTo`): users
//!   assigned directly, and the direct members (`/groups/{id}/members`) of assigned
//!   groups, as Entra does not cascade an assignment to nested groups.
//! - Permissions (application, admin-consented): `User.Read.All`,
//!   `GroupMember.Read.All`, and `Application.Read.All` with `app_id`; a 403
//!   names the one the refused read needs. A Microsoft 365 group with hidden
//!   membership (`visibility` HiddenMembership, selected in the group listing)
//!   lists its members only with `Member.Read.Hidden`: one the configuration
//!   names, or assigned to the app, listed with no user fails the read naming
//!   that permission (its members would look out of scope), as does a 403.
//! - A refused request's error ends with what a Microsoft support case needs,
//!   never cut with a long message: Graph's `request-id` and `date` (the error
//!   body's `innerError`, else the answer's headers), or the token endpoint's
//!   `correlation_id`, `trace_id` and `timestamp`.
//! - Throttling: 429 and 503 are retried after `Retry-After`, and no other request
//!   leaves before then (Graph throttles the app in the tenant, and the concurrent
//!   reads would each be refused in turn; a 429 without `Retry-After` holds them
//!   for the refused read's backoff); a request-rate limit
//!   (`requests_per_second`) keeps a snapshot inside the directory read budget.
//! - `changes_since`: `users/delta` and `groups/delta` from stored delta links;
//!   `@removed` users are removed (a user listed twice in a round, say removed and
//!   then restored, counts as their last occurrence); a group spread over several pages is merged by
//!   id. Asked with `Prefer: return=minimal`, so a group carries `displayName` only
//!   when it was renamed or created. A group of interest renamed or deleted (its id
//!   is in the cursor, from the last full read), or any group given a name of
//!   interest, reads the whole directory (its members' group names changed); other
//!   groups' renames, creations and deletions, and membership changes of devices,
//!   service principals and contacts, cost nothing. An expired delta token (400/410 `syncStateNotFound`, `resyncRequired`)
//!   falls back to a full snapshot, as do delta links stored under another
//!   `graph_url` or `tenant_id` (the cursor records the tenant), which are never
//!   followed. The cursor also records the groups of interest with hidden
//!   membership (for the configured names): without `Member.Read.Hidden` Graph
//!   leaves them out of `transitiveMemberOf` and their membership changes out of
//!   `groups/delta`, silently, so each round lists their members as a full read
//!   does and fails the same way; a cursor that does not record them (an older
//!   version's, or taken for other names) reads in full once.
//!
//! Status mapping: `accountEnabled: true` → active, `false` → suspended; a deleted
//! user (in the recycle bin or gone) is absent from `/users`, and `@removed` in a
//! delta. Entra has no "deprovisioned" status.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::remote::{
    self, PagesRead, Reply, Secret, TokenCache, Transport, endpoint_of, reference_text,
    required_str, same_origin, status_error, with_detail,
};
use super::{DirectoryChanges, DirectoryError, GroupInterest, RemoteStats, jwt};
use crate::http::{Limits, encode_component, page_cap_reached, path_segment};
use crate::model::{DirectorySnapshot, Identity, IdentityStatus};
use crate::retry::RetryPolicy;

const PROVIDER: &str = "entra";
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com";
pub const DEFAULT_LOGIN_URL: &str = "https://login.microsoftonline.com";
/// `$top` maximum for users, groups and members.
const TOP: u32 = 999;
/// The user properties read; `accountEnabled` is not returned unless selected.
pub const USER_SELECT: &str = "id,userPrincipalName,mail,givenName,surname,displayName,accountEnabled,department,employeeId,userType";
const CURSOR_PREFIX: &str = "entra-v1:";
/// Above this many affected users, `changes_since` reads a full snapshot instead.
const MAX_DELTA_USERS: usize = 250;
/// `id in (…)` filters take at most 15 values.
const ID_FILTER_CHUNK: usize = 15;

#[derive(Debug, Clone)]
pub enum EntraAuth {
    ClientSecret(Secret),
    /// A certificate credential: the PEM certificate registered on the app and its
    /// RSA private key.
    Certificate {
        certificate: Secret,
        private_key: Secret,
    },
}

#[derive(Debug, Clone)]
pub struct EntraSettings {
    pub tenant_id: String,
    pub client_id: String,
    pub auth: EntraAuth,
    /// The application (client) id whose service principal's assignments scope
    /// the snapshot.
    pub app_id: Option<String>,
    /// Default `https://graph.microsoft.com` (national clouds and tests differ).
    pub graph_url: Option<url::Url>,
    /// Default `https://login.microsoftonline.com`.
    pub login_url: Option<url::Url>,
    /// Group `displayName`s the policy scopes by; each must exist.
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
    /// 0 disables the limit.
    pub requests_per_second: u32,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Whether B2B guests (`userType` Guest) are people of the directory. When
    /// not, they are left out of every read: their accounts count as nobody's.
    pub include_guests: bool,
    /// The user property that becomes the workspace userName.
    pub user_name: EntraUserName,
    /// `directory.ca_file`: PEM CAs trusted instead of the system's roots, read
    /// when the connection is made ([`super::remote::ca_pem`]).
    pub ca_file: Option<std::path::PathBuf>,
}

/// `directory.user_name_attribute` for Entra: which user property becomes the
/// workspace userName. Entra's own provisioning maps `userPrincipalName` by
/// default and is often changed to `mail`; a workspace that identifies people by
/// email (Taskade does) wants `mail` where UPNs are not their email addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum EntraUserName {
    #[default]
    #[serde(rename = "userPrincipalName")]
    UserPrincipalName,
    #[serde(rename = "mail")]
    Mail,
}

/// Which members of a group a read asks for.
#[derive(Debug, Clone, Copy)]
enum Membership {
    /// Through nested groups too: a name the policy scopes or maps by.
    Transitive,
    /// Direct members only: what an app assignment of the group covers.
    Direct,
}

struct Inner {
    settings: EntraSettings,
    /// Pages a listing may take, bytes an answer may hold.
    limits: Limits,
    /// `{graph_url}/v1.0`.
    api: String,
    /// `{graph_url}` without a trailing slash: paging links must stay on it.
    graph: String,
    /// `{login_url}` without a trailing slash.
    login: String,
    transport: tokio::sync::OnceCell<Transport>,
    tokens: TokenCache,
}

/// A Microsoft Entra tenant; cheap to clone.
#[derive(Clone)]
pub struct EntraSource {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EntraSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraSource")
            .field("tenant_id", &self.inner.settings.tenant_id)
            .field("client_id", &self.inner.settings.client_id)
            .finish_non_exhaustive()
    }
}

/// The delta links `changes_since` stores in its cursor.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Cursor {
    users: String,
    groups: String,
    /// Ids of the groups whose names the configuration uses, as of the last full
    /// read: a rename or deletion of another group changes nobody's groups of
    /// interest. Absent (a cursor from before), every group counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interest: Option<Vec<String>>,
    /// The configured group names those ids were taken for (folded, sorted): after
    /// a reload that names other groups, the ids say nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    names: Option<Vec<String>>,
    /// `directory.tenant_id` when the links were taken: a delta link does not name
    /// its tenant, and followed with another tenant's token it says nothing about
    /// this one. Absent (a cursor from before), the links are taken as this
    /// tenant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    /// The groups of interest with hidden membership (`visibility`
    /// HiddenMembership) at the last full read, taken for `names`. Graph leaves
    /// such a group out of a user's `transitiveMemberOf`, and its membership
    /// changes out of `groups/delta`, silently for an app without
    /// `Member.Read.Hidden`: each delta round lists their members as the full read
    /// does, so that a permission taken away since fails the sweep as it fails a
    /// reconcile. Absent (a cursor from before), not known: read in full once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hidden: Option<Vec<HiddenGroup>>,
}

/// A group of interest whose members only an app with `Member.Read.Hidden` may
/// list, as the last full read found it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct HiddenGroup {
    id: String,
    name: String,
}

/// What a full read learns about the groups of interest for the cursor.
struct Interest {
    /// Ids of the groups whose names the configuration uses (every group when it
    /// names none), sorted.
    ids: Vec<String>,
    /// Those with hidden membership, sorted by id; none when the configuration
    /// names no group (hidden groups then give nobody scope).
    hidden: Vec<HiddenGroup>,
}

/// What a delta round said.
enum DeltaOutcome<T> {
    Done(T),
    /// The delta token expired: start over with a full snapshot.
    Expired,
}

impl EntraSource {
    pub fn new(settings: EntraSettings) -> EntraSource {
        EntraSource::with_limits(settings, Limits::default())
    }

    /// [`EntraSource::new`] with other limits than [`Limits::default`]: a listing
    /// or delta round that would take more than `limits.max_pages` pages, or an
    /// answer longer than `limits.max_body_bytes`, fails the read as malformed.
    pub fn with_limits(settings: EntraSettings, limits: Limits) -> EntraSource {
        let base = |url: &Option<url::Url>, default: &str| {
            url.as_ref()
                .map_or(default, url::Url::as_str)
                .trim_end_matches('/')
                .to_owned()
        };
        let graph = base(&settings.graph_url, DEFAULT_GRAPH_URL);
        let login = base(&settings.login_url, DEFAULT_LOGIN_URL);
        EntraSource {
            inner: Arc::new(Inner {
                settings,
                limits,
                api: format!("{graph}/v1.0"),
                graph,
                login,
                transport: tokio::sync::OnceCell::new(),
                tokens: TokenCache::default(),
            }),
        }
    }

    /// Reads the credential files and, for a certificate credential, parses the
    /// certificate and its key, and checks `ca_file`: what `check-config` can
    /// prove without the network.
    pub fn check_files(&self) -> Result<(), DirectoryError> {
        super::remote::ca_pem(self.inner.settings.ca_file.as_deref())?;
        match &self.inner.settings.auth {
            EntraAuth::ClientSecret(secret) => secret.read().map(drop),
            EntraAuth::Certificate {
                certificate,
                private_key,
            } => {
                let cert = certificate.read()?;
                jwt::certificate_thumbprint(
                    cert.expose_secret().as_bytes(),
                    &certificate.named("directory.certificate_file"),
                )?;
                let pem = private_key.read()?;
                jwt::SigningKey::from_pem(
                    pem.expose_secret().as_bytes(),
                    &private_key.named("directory.private_key_file"),
                )
                .map(drop)
            }
        }
    }

    pub fn tenant_id(&self) -> &str {
        &self.inner.settings.tenant_id
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
        // One client for Graph and the login endpoint: a plain http:// one of them
        // (a local stand-in) makes both direct.
        let plain_http = [&self.inner.graph, &self.inner.login]
            .iter()
            .any(|url| url.starts_with("http://"));
        self.inner
            .transport
            .get_or_try_init(|| async {
                Transport::new(
                    s.timeout,
                    s.max_concurrency,
                    s.requests_per_second,
                    s.retry,
                    max_body,
                    plain_http,
                    s.ca_file.as_deref(),
                )
            })
            .await
    }

    /// Every user in scope with status and groups, or an error.
    pub async fn snapshot(&self) -> Result<DirectorySnapshot, DirectoryError> {
        Ok(self.snapshot_and_interest().await?.0)
    }

    /// [`EntraSource::snapshot`], and the ids of the groups whose names the
    /// configuration uses (every group when it names none), with those of them
    /// whose membership is hidden.
    async fn snapshot_and_interest(&self) -> Result<(DirectorySnapshot, Interest), DirectoryError> {
        let api = &self.inner.api;
        let select = encode_component(USER_SELECT);
        // The user list (a chain of nextLink pages) and the group side (groups,
        // then members, read concurrently) run at the same time.
        let people = self.list(format!("{api}/users?$select={select}&$top={TOP}"));
        let memberships = async {
            let groups = self
                .list(format!(
                    "{api}/groups?$select=id,displayName,visibility&$top={TOP}"
                ))
                .await?;
            let hidden: HashSet<String> = groups
                .iter()
                .filter(|g| has_hidden_membership(g))
                .filter_map(|g| g.get("id").and_then(Value::as_str).map(str::to_owned))
                .collect();
            let groups = groups
                .iter()
                .map(|g| parse_group(g, "GET /v1.0/groups"))
                .collect::<Result<Vec<_>, _>>()?;
            let wanted = self.groups_of_interest(&groups)?;
            let app_scope = match &self.inner.settings.app_id {
                Some(app) => Some(self.app_assignments(app).await?),
                None => None,
            };
            if let Some((_, app_groups)) = &app_scope {
                remote::check_app_groups_listed(PROVIDER, &groups, app_groups, "GET /v1.0/groups")?;
            }
            let to_read = remote::groups_to_read(
                &groups,
                &wanted,
                app_scope.as_ref().map(|(_, app_groups)| app_groups),
            );
            // Names count through nesting; an app assignment covers the group's
            // direct members only ("assignment doesn't cascade to nested groups").
            let is_assigned = |id: &String| {
                app_scope
                    .as_ref()
                    .is_some_and(|(_, app_groups)| app_groups.contains(id))
            };
            let named: Vec<_> = to_read
                .iter()
                .filter(|(id, _)| wanted.contains(id))
                .cloned()
                .collect();
            let assigned: Vec<_> = to_read
                .iter()
                .filter(|(id, _)| is_assigned(id))
                .cloned()
                .collect();
            // With no group named, every group is read for its name alone: a
            // hidden one listed empty takes nobody out of scope.
            let named_scope = !self.interest_names().is_everything();
            let (transitive, direct) = futures::try_join!(
                self.members(&named, Membership::Transitive, &hidden, named_scope),
                self.members(&assigned, Membership::Direct, &hidden, true),
            )?;
            let (mut transitive, mut direct) = (transitive.into_iter(), direct.into_iter());
            let mut members = Vec::with_capacity(to_read.len());
            let mut assigned_members = Vec::with_capacity(to_read.len());
            for (id, _) in &to_read {
                let named = wanted.contains(id).then(|| transitive.next()).flatten();
                let assigned = is_assigned(id).then(|| direct.next()).flatten();
                members.push(named.unwrap_or_default());
                assigned_members.push(assigned.unwrap_or_default());
            }
            let mut hidden_named: Vec<HiddenGroup> = if named_scope {
                named
                    .iter()
                    .filter(|(id, _)| hidden.contains(id))
                    .map(|(id, name)| HiddenGroup {
                        id: id.clone(),
                        name: name.clone(),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            hidden_named.sort_by(|a, b| a.id.cmp(&b.id));
            Ok::<_, DirectoryError>((
                wanted,
                app_scope,
                to_read,
                members,
                assigned_members,
                hidden_named,
            ))
        };
        let (users, (wanted, app_scope, to_read, members, assigned_members, hidden)) =
            futures::try_join!(people, memberships)?;
        let identities = parse_users(&users, "GET /v1.0/users", &self.inner.settings)?;
        let snapshot = remote::assemble_snapshot(
            identities,
            &to_read,
            &members,
            &wanted,
            app_scope.as_ref(),
            Some(&assigned_members),
        );
        let mut ids: Vec<String> = wanted.into_iter().collect();
        ids.sort();
        Ok((snapshot, Interest { ids, hidden }))
    }

    /// What changed since `cursor` (two delta links). The first call (and any call
    /// whose cursor is unreadable or expired) takes fresh delta links with
    /// `$deltatoken=latest` *before* reading the whole directory, so nothing that
    /// changes during the read is missed. With `app_id`, or when a nested group or
    /// a whole group of interest changed, the answer is a full snapshot too.
    pub async fn changes_since(
        &self,
        cursor: Option<&str>,
    ) -> Result<DirectoryChanges, DirectoryError> {
        let parsed = cursor.and_then(|c| {
            c.strip_prefix(CURSOR_PREFIX)
                .and_then(|json| serde_json::from_str::<Cursor>(json).ok())
        });
        if cursor.is_some() && parsed.is_none() {
            tracing::warn!("unreadable Entra cursor; reading the whole directory");
        }
        match parsed {
            Some(links) if self.inner.settings.app_id.is_none() => {
                if let Some(why) = self.taken_elsewhere(&links) {
                    // Links stored under another `graph_url` or `tenant_id` (a
                    // stand-in used while setting up, a tenant moved to): following
                    // them would send the token elsewhere or read another tenant,
                    // and refusing them would fail every sweep until the state
                    // database is edited by hand.
                    tracing::warn!("{why}; reading the whole directory");
                    return self.full_with_cursor().await;
                }
                if self.hidden_groups(&links).is_none() {
                    tracing::info!(
                        "the Entra cursor does not record which groups of interest have \
                         hidden membership (an older version's, or taken for other configured \
                         group names); reading the whole directory"
                    );
                    return self.full_with_cursor().await;
                }
                match self.delta(&links).await? {
                    DeltaOutcome::Done(changes) => Ok(changes),
                    DeltaOutcome::Expired => {
                        tracing::info!("Entra delta token expired; reading the whole directory");
                        self.full_with_cursor().await
                    }
                }
            }
            _ => self.full_with_cursor().await,
        }
    }

    async fn full_with_cursor(&self) -> Result<DirectoryChanges, DirectoryError> {
        let api = &self.inner.api;
        let select = encode_component(USER_SELECT);
        let (users, groups) = futures::try_join!(
            self.delta_pages(format!(
                "{api}/users/delta?$select={select}&$deltatoken=latest"
            )),
            self.delta_pages(format!(
                "{api}/groups/delta?$select=displayName,members&$deltatoken=latest"
            )),
        )?;
        let (DeltaOutcome::Done((_, users)), DeltaOutcome::Done((_, groups))) = (users, groups)
        else {
            return Err(DirectoryError::Malformed {
                endpoint: "GET /v1.0/users/delta?$deltatoken=latest".into(),
                what: "a fresh delta token was reported expired".into(),
            });
        };
        let (snapshot, interest) = self.snapshot_and_interest().await?;
        Ok(DirectoryChanges::Full {
            snapshot,
            cursor: Some(self.full_read_cursor(&users, &groups, &interest)?),
        })
    }

    /// Why the stored delta links are not this configuration's to follow: they
    /// point outside `graph_url`, or were taken for another `tenant_id`.
    fn taken_elsewhere(&self, links: &Cursor) -> Option<String> {
        if [&links.users, &links.groups]
            .iter()
            .any(|link| !same_origin(&self.inner.graph, link))
        {
            return Some(format!(
                "the stored Entra delta links point outside graph_url {}",
                self.inner.graph
            ));
        }
        let tenant = &self.inner.settings.tenant_id;
        match &links.tenant {
            Some(taken) if !taken.eq_ignore_ascii_case(tenant) => Some(format!(
                "the stored Entra delta links were taken for tenant {taken:?}, not \
                 directory.tenant_id {tenant:?}"
            )),
            _ => None,
        }
    }

    async fn delta(
        &self,
        links: &Cursor,
    ) -> Result<DeltaOutcome<DirectoryChanges>, DirectoryError> {
        let hidden = self.hidden_groups(links).unwrap_or_default();
        let (users, groups, hidden_readable) = futures::try_join!(
            self.delta_pages(links.users.clone()),
            self.delta_pages(links.groups.clone()),
            self.hidden_readable(hidden),
        )?;
        let (
            DeltaOutcome::Done((user_items, users_link)),
            DeltaOutcome::Done((group_items, groups_link)),
        ) = (users, groups)
        else {
            return Ok(DeltaOutcome::Expired);
        };
        if !hidden_readable {
            tracing::info!(
                "an Entra group of interest with hidden membership is gone; reading the whole \
                 directory"
            );
            return self.full_changes(&users_link, &groups_link).await;
        }
        let mut removed = BTreeSet::new();
        let mut affected = BTreeSet::new();
        // A round may carry one user more than once, and the last occurrence is
        // their state: one soft-deleted and restored meanwhile comes as removed,
        // then as a user, and counted as removed would be deprovisioned.
        for u in &user_items {
            let id = required_str(u, "id", "GET /v1.0/users/delta")?;
            if u.get("@removed").is_some() {
                // reason "changed" = soft-deleted (restorable), "deleted" = gone;
                // either way the person no longer has an account.
                affected.remove(id);
                removed.insert(id.to_owned());
            } else {
                removed.remove(id);
                affected.insert(id.to_owned());
            }
        }
        // Whether a group's rename, creation or deletion changes anyone's groups
        // of interest: its id was one at the last full read, or its new name is
        // one. Without the ids (a cursor from before), every group counts.
        let names = self.interest_names();
        let known: Option<&Vec<String>> = links
            .interest
            .as_ref()
            .filter(|_| links.names.as_ref() == Some(&self.configured_names()));
        let counts = |id: &str, name: Option<&str>| {
            names.is_everything()
                || known.is_none_or(|ids| ids.iter().any(|known| known == id))
                || name.is_some_and(|name| names.wants(name))
        };
        // A big group comes back on several pages with different member slices:
        // merge by group id before looking at the members.
        let mut merged: BTreeMap<String, (bool, Vec<Value>)> = BTreeMap::new();
        for g in &group_items {
            let id = required_str(g, "id", "GET /v1.0/groups/delta")?;
            if g.get("@removed").is_some() && counts(id, None) {
                tracing::info!(
                    group = id,
                    "Entra group deleted; reading the whole directory"
                );
                return self.full_changes(&users_link, &groups_link).await;
            }
            let (renamed, members) = merged.entry(id.to_owned()).or_default();
            // Asked with `Prefer: return=minimal`: a property is in the answer
            // only if it changed (a new group has one too).
            // Either, there but of another type, cannot be read as "unchanged":
            // a rename to a name of interest, or a removal from a scope group,
            // would be lost while the stored link moves past it.
            let malformed = |what: &str| DirectoryError::Malformed {
                endpoint: "GET /v1.0/groups/delta".to_owned(),
                what: format!("group {id:?}: {what}"),
            };
            let name = match g.get("displayName") {
                None | Some(Value::Null) => None,
                Some(Value::String(name)) => Some(name.as_str()),
                Some(_) => return Err(malformed("displayName is not a string")),
            };
            *renamed |= name.is_some_and(|name| counts(id, Some(name)));
            match g.get("members@delta") {
                None | Some(Value::Null) => {}
                Some(Value::Array(slice)) => {
                    // Devices (Intune's dynamic groups change all day), service
                    // principals and contacts are never identities: their comings
                    // and goings change nobody's groups.
                    members.extend(slice.iter().filter(|m| !is_never_an_identity(m)).cloned());
                }
                Some(_) => return Err(malformed("members@delta is not an array")),
            }
        }
        for (id, (renamed, _)) in &merged {
            if *renamed {
                // A rename changes every member's group names, and the delta lists
                // only the members that joined or left.
                tracing::info!(group = %id, "Entra group renamed; reading the whole directory");
                return self.full_changes(&users_link, &groups_link).await;
            }
        }
        for (_, members) in merged.values() {
            for m in members {
                let kind = m.get("@odata.type").and_then(Value::as_str).unwrap_or("");
                if kind != "#microsoft.graph.user" {
                    // A nested group joined or left (or a member of a kind not known
                    // here): its members' transitive groups changed, and the delta
                    // does not list them.
                    tracing::info!(
                        kind,
                        "nested Entra group membership changed; reading the whole directory"
                    );
                    return self.full_changes(&users_link, &groups_link).await;
                }
                let id = required_str(m, "id", "GET /v1.0/groups/delta")?;
                if !removed.contains(id) {
                    affected.insert(id.to_owned());
                }
            }
        }
        if affected.len() > MAX_DELTA_USERS {
            // Each affected user costs a transitiveMemberOf request: past this, a
            // snapshot is cheaper.
            tracing::info!(
                affected = affected.len(),
                "many Entra users changed; reading the whole directory"
            );
            return self.full_changes(&users_link, &groups_link).await;
        }
        let (changed, guests) = self
            .read_users(&affected.into_iter().collect::<Vec<_>>())
            .await?;
        // Left out of every read, so gone as far as seatwarden knows.
        removed.extend(guests);
        let configured = self.configured_names();
        let cursor = links_of(
            &self.inner.settings.tenant_id,
            &users_link,
            &groups_link,
            known.map(Vec::as_slice),
            (!names.is_everything()).then_some((configured.as_slice(), hidden)),
        )?;
        Ok(DeltaOutcome::Done(DirectoryChanges::Delta {
            changed,
            removed: removed.into_iter().collect(),
            cursor,
        }))
    }

    /// A full snapshot carrying the delta links just obtained: the delta said
    /// something changed that it cannot describe user by user.
    async fn full_changes(
        &self,
        users_link: &str,
        groups_link: &str,
    ) -> Result<DeltaOutcome<DirectoryChanges>, DirectoryError> {
        let (snapshot, interest) = self.snapshot_and_interest().await?;
        Ok(DeltaOutcome::Done(DirectoryChanges::Full {
            snapshot,
            cursor: Some(self.full_read_cursor(users_link, groups_link, &interest)?),
        }))
    }

    /// The cursor after a full read: the delta links, and what the read found of
    /// the groups of interest (nothing when every group is of interest, as every
    /// change counts then).
    fn full_read_cursor(
        &self,
        users_link: &str,
        groups_link: &str,
        interest: &Interest,
    ) -> Result<String, DirectoryError> {
        let configured = self.configured_names();
        let named = !self.interest_names().is_everything();
        links_of(
            &self.inner.settings.tenant_id,
            users_link,
            groups_link,
            named.then_some(interest.ids.as_slice()),
            named.then_some((configured.as_slice(), interest.hidden.as_slice())),
        )
    }

    /// The groups of interest with hidden membership that `links` recorded at the
    /// last full read, when they can be trusted: recorded (not by an older
    /// version) for the group names configured now. The configuration naming no
    /// group needs none (a hidden group then gives nobody scope).
    fn hidden_groups<'a>(&self, links: &'a Cursor) -> Option<&'a [HiddenGroup]> {
        if self.interest_names().is_everything() {
            return Some(&[]);
        }
        links
            .hidden
            .as_deref()
            .filter(|_| links.names.as_ref() == Some(&self.configured_names()))
    }

    /// Lists the members of each of `hidden` as a full read does: one listed with
    /// no user, or refused with 403, fails the round naming `Member.Read.Hidden`.
    /// Without that permission Graph leaves the group out of a user's
    /// `transitiveMemberOf` (re-read, its member would look out of scope) and
    /// its membership changes out of `groups/delta` (a removal would never be
    /// seen), without a word. `false` when one answers 404: deleted since, it
    /// calls for a full read (failing every round instead, the delta links would
    /// never move on).
    async fn hidden_readable(&self, hidden: &[HiddenGroup]) -> Result<bool, DirectoryError> {
        if hidden.is_empty() {
            return Ok(true);
        }
        let groups: Vec<(String, String)> = hidden
            .iter()
            .map(|g| (g.id.clone(), g.name.clone()))
            .collect();
        let ids: HashSet<String> = hidden.iter().map(|g| g.id.clone()).collect();
        match self
            .members(&groups, Membership::Transitive, &ids, true)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Current record and transitive groups of each id; ids no longer found are
    /// skipped (the delta reports their removal separately). Guests, when they are
    /// left out, come back as ids of their own.
    async fn read_users(
        &self,
        ids: &[String],
    ) -> Result<(Vec<Identity>, Vec<String>), DirectoryError> {
        let api = &self.inner.api;
        let select = encode_component(USER_SELECT);
        let mut identities = Vec::new();
        let mut guests = Vec::new();
        for chunk in ids.chunks(ID_FILTER_CHUNK) {
            let list = chunk
                .iter()
                .map(|id| format!("'{}'", id.replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(",");
            let filter = encode_component(&format!("id in ({list})"));
            let users = self
                .list(format!("{api}/users?$filter={filter}&$select={select}"))
                .await?;
            for u in &users {
                if self.inner.settings.include_guests || !is_guest(u) {
                    identities.push(parse_user(
                        u,
                        "GET /v1.0/users",
                        self.inner.settings.user_name,
                    )?);
                } else {
                    guests.push(required_str(u, "id", "GET /v1.0/users")?.to_owned());
                }
            }
        }
        let interest = self.interest_names();
        let concurrency = self.inner.settings.max_concurrency.max(1);
        let mut identities: Vec<Identity> =
            futures::stream::iter(identities.into_iter().map(|mut identity| {
                let interest = &interest;
                async move {
                    let url = format!(
                        "{}/users/{}/transitiveMemberOf?$select=id,displayName&$top={TOP}",
                        self.inner.api,
                        segment(&identity.id, "GET /v1.0/users/{id}/transitiveMemberOf")?
                    );
                    // Directory roles and administrative units come too: only
                    // groups give scope and roles.
                    let mut groups = self.list(url).await?;
                    groups.retain(|item| !of_another_type(item, "group"));
                    identity.groups =
                        remote::names_of_interest(PROVIDER, &groups, interest, |g| {
                            parse_group(g, "GET /v1.0/users/{id}/transitiveMemberOf")
                        })?;
                    Ok::<_, DirectoryError>(identity)
                }
            }))
            .buffered(concurrency)
            .try_collect()
            .await?;
        identities.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((identities, guests))
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
            "an Entra group (displayName)",
            "rename or delete the look-alike in Entra",
        )
    }

    /// `check-config --connect`: a token from the tenant's token endpoint and one
    /// small page of each collection a snapshot reads (users, groups, and with
    /// `app_id` the app's service principal and its assignments), through the
    /// requests' own path: retries, and errors naming the endpoint, the Graph
    /// permission missing and the request-id. Each page is read as a run reads
    /// it ([`page_values`], [`parse_users`], [`parse_group`],
    /// [`assigned_principals`]): a user a run would refuse (no
    /// `accountEnabled`, no `userPrincipalName`) fails the check, naming it.
    /// What it proved, one item a request; no page is followed.
    /// Every group's name (`GET /v1.0/groups`, all pages), for
    /// `check-config --connect` to name the groups that only look like configured
    /// ones ([`super::Directory::group_names`]).
    pub async fn group_names(&self) -> Result<Vec<String>, DirectoryError> {
        let api = &self.inner.api;
        let groups = self
            .list(format!("{api}/groups?$select=id,displayName&$top={TOP}"))
            .await?;
        groups
            .iter()
            .map(|g| parse_group(g, "GET /v1.0/groups").map(|(_, name)| name))
            .collect()
    }

    pub async fn probe(&self) -> Result<Vec<String>, DirectoryError> {
        let api = &self.inner.api;
        let select = encode_component(USER_SELECT);
        let mut proven = Vec::new();
        let (endpoint, users) = self
            .probe_page(&format!("{api}/users?$select={select}&$top=1"))
            .await?;
        parse_users(&users, "GET /v1.0/users", &self.inner.settings)?;
        proven.push(endpoint);
        let (endpoint, groups) = self
            .probe_page(&format!(
                "{api}/groups?$select=id,displayName,visibility&$top=1"
            ))
            .await?;
        for group in &groups {
            parse_group(group, "GET /v1.0/groups")?;
        }
        proven.push(endpoint);
        if let Some(app_id) = &self.inner.settings.app_id {
            let sp = self.service_principal(app_id).await?;
            proven.push("GET /v1.0/servicePrincipals".to_owned());
            let (endpoint, assignments) = self
                .probe_page(&format!(
                    "{api}/servicePrincipals/{}/appRoleAssignedTo?$top=1",
                    segment(&sp, "GET /v1.0/servicePrincipals/{id}/appRoleAssignedTo")?
                ))
                .await?;
            assigned_principals(&assignments)?;
            proven.push(endpoint);
        }
        proven.insert(0, "access token issued".to_owned());
        Ok(proven)
    }

    /// The first page at `url` alone, its `value` array taken as
    /// [`EntraSource::list`] takes it: the endpoint read and the items.
    async fn probe_page(&self, url: &str) -> Result<(String, Vec<Value>), DirectoryError> {
        let endpoint = endpoint_of("GET", url);
        let page = self.get(url, &endpoint).await?.json(&endpoint)?;
        let items = page_values(page, &endpoint)?;
        Ok((endpoint, items))
    }

    /// The id of the one service principal of the application `app_id`.
    async fn service_principal(&self, app_id: &str) -> Result<String, DirectoryError> {
        let api = &self.inner.api;
        let filter = encode_component(&format!("appId eq '{}'", app_id.replace('\'', "''")));
        let found = self
            .list(format!(
                "{api}/servicePrincipals?$filter={filter}&$select=id,appId"
            ))
            .await?;
        match found.as_slice() {
            [one] => Ok(required_str(one, "id", "GET /v1.0/servicePrincipals")?.to_owned()),
            _ => Err(DirectoryError::Scope {
                provider: PROVIDER,
                message: format!(
                    "app_id {app_id:?} matches {} service principals, expected one",
                    found.len()
                ),
            }),
        }
    }

    /// The users and groups the app's service principal is assigned to.
    async fn app_assignments(
        &self,
        app_id: &str,
    ) -> Result<(HashSet<String>, HashSet<String>), DirectoryError> {
        let api = &self.inner.api;
        let sp = self.service_principal(app_id).await?;
        let assignments = self
            .list(format!(
                "{api}/servicePrincipals/{}/appRoleAssignedTo?$top={TOP}",
                segment(&sp, "GET /v1.0/servicePrincipals/{id}/appRoleAssignedTo")?
            ))
            .await?;
        assigned_principals(&assignments)
    }

    /// The user ids in each of `groups`, through nested groups or directly.
    ///
    /// A group with hidden membership (`visibility` HiddenMembership, a Microsoft
    /// 365 group's setting) lists its members only to an app with
    /// `Member.Read.Hidden`: read as nobody, every member would look out of
    /// scope (or lose a mapped role) and be deprovisioned, so a group of
    /// `hidden` listed with no user fails the read when its members give scope
    /// or roles (`gives_scope`), naming the permission; a 403 for one names it
    /// too.
    async fn members(
        &self,
        groups: &[(String, String)],
        membership: Membership,
        hidden: &HashSet<String>,
        gives_scope: bool,
    ) -> Result<Vec<Vec<String>>, DirectoryError> {
        let relation = match membership {
            Membership::Transitive => "transitiveMembers",
            Membership::Direct => "members",
        };
        let concurrency = self.inner.settings.max_concurrency.max(1);
        // Built before they enter the stream: a closure in the stream's type trips
        // the compiler's Send inference in spawned callers (rust-lang/rust#102211).
        let pending: Vec<_> = groups
            .iter()
            .map(|(id, name)| async move {
                let endpoint = format!("GET /v1.0/groups/{{id}}/{relation}");
                let url = format!(
                    "{}/groups/{}/{relation}?$select=id&$top={TOP}",
                    self.inner.api,
                    segment(id, &endpoint)?
                );
                let is_hidden = hidden.contains(id);
                let members = match self.list(url).await {
                    Ok(members) => members,
                    Err(e) if is_hidden && e.status() == Some(403) => {
                        return Err(with_detail(e, |detail| {
                            format!("{detail}; {}", hidden_membership_hint(name))
                        }));
                    }
                    Err(e) => return Err(e),
                };
                let users = members
                    .iter()
                    .filter(|m| !of_another_type(m, "user"))
                    .map(|m| required_str(m, "id", &endpoint).map(str::to_owned))
                    .collect::<Result<Vec<_>, _>>()?;
                if is_hidden && gives_scope && users.is_empty() {
                    return Err(DirectoryError::Scope {
                        provider: PROVIDER,
                        message: format!(
                            "{endpoint} listed no user of group {name:?}, whose membership \
                             is hidden (visibility HiddenMembership): {}; if the group is \
                             really empty, add its members or take it out of the \
                             configuration",
                            hidden_membership_hint(name)
                        ),
                    });
                }
                Ok(users)
            })
            .collect();
        futures::stream::iter(pending)
            .buffered(concurrency)
            .try_collect()
            .await
    }

    /// Every item of a collection, following `@odata.nextLink`, in at most
    /// `limits.max_pages` pages.
    async fn list(&self, first: String) -> Result<Vec<Value>, DirectoryError> {
        let listing = endpoint_of("GET", &first);
        let mut items = Vec::new();
        let mut visited = PagesRead::starting_at(&first);
        let mut url = first;
        let mut pages: u64 = 0;
        loop {
            let endpoint = endpoint_of("GET", &url);
            let page = self.get(&url, &endpoint).await?.json(&endpoint)?;
            pages += 1;
            let next = link_of(&page, NEXT_LINK, &endpoint)?;
            items.extend(page_values(page, &endpoint)?);
            match next.as_deref() {
                None => return Ok(items),
                Some(next) => {
                    url = self.checked_next(next, NEXT_LINK, &endpoint, &mut visited)?;
                    self.check_page_cap(pages, &endpoint, &listing)?;
                }
            }
        }
    }

    /// The pages of one delta round: items and the final `@odata.deltaLink`.
    async fn delta_pages(
        &self,
        first: String,
    ) -> Result<DeltaOutcome<(Vec<Value>, String)>, DirectoryError> {
        let listing = endpoint_of("GET", &first);
        let mut items = Vec::new();
        let mut visited = PagesRead::starting_at(&first);
        let mut url = first;
        let mut pages: u64 = 0;
        loop {
            let endpoint = endpoint_of("GET", &url);
            // Without `return=minimal` every object in a round carries all its
            // selected properties, the unchanged ones with their old values, so a
            // rename could not be told from a membership change.
            let mut page = match self
                .get_preferring(&url, &endpoint, Some("return=minimal"))
                .await
            {
                Ok(reply) => reply.json(&endpoint)?,
                Err(e) if is_expired_delta(&e) => return Ok(DeltaOutcome::Expired),
                Err(e) => return Err(e),
            };
            pages += 1;
            // Every delta page carries `value`, the last one too (empty when
            // nothing changed). A page without it that names the next or the
            // delta link would drop its changes (a leaver's `accountEnabled:
            // false`, a removal) while the stored link moves past them.
            match page.get_mut("value").map(Value::take) {
                Some(Value::Array(values)) => items.extend(values),
                _ => {
                    return Err(DirectoryError::Malformed {
                        endpoint,
                        what: "a delta page without a \"value\" array".into(),
                    });
                }
            }
            // A link that is there but not a URL is no end of the round: taken
            // for one, the pages after it (or the round's delta link) are lost.
            if let Some(next) = link_of(&page, NEXT_LINK, &endpoint)? {
                url = self.checked_next(&next, NEXT_LINK, &endpoint, &mut visited)?;
                self.check_page_cap(pages, &endpoint, &listing)?;
                continue;
            }
            return match link_of(&page, DELTA_LINK, &endpoint)? {
                Some(link) => {
                    self.checked_next(&link, DELTA_LINK, &endpoint, &mut PagesRead::default())?;
                    Ok(DeltaOutcome::Done((items, link)))
                }
                None => Err(DirectoryError::Malformed {
                    endpoint,
                    what: "a delta page with neither @odata.nextLink nor @odata.deltaLink".into(),
                }),
            };
        }
    }

    /// An error once `pages` pages of `listing` were read and another is named:
    /// a listing past the cap is taken to loop.
    fn check_page_cap(
        &self,
        pages: u64,
        endpoint: &str,
        listing: &str,
    ) -> Result<(), DirectoryError> {
        let max_pages = self.inner.limits.max_pages;
        if pages >= max_pages {
            return Err(DirectoryError::Malformed {
                endpoint: endpoint.to_owned(),
                what: page_cap_reached("@odata.nextLink", max_pages, listing),
            });
        }
        Ok(())
    }

    /// `next`, the page's `link` (`@odata.nextLink` or `@odata.deltaLink`), when
    /// it may be followed: on `graph_url`, and not a page of `visited`.
    fn checked_next(
        &self,
        next: &str,
        link: &str,
        endpoint: &str,
        visited: &mut PagesRead,
    ) -> Result<String, DirectoryError> {
        if !same_origin(&self.inner.graph, next) {
            return Err(DirectoryError::Malformed {
                endpoint: endpoint.to_owned(),
                what: format!("{link} points to another origin"),
            });
        }
        if !visited.is_new(next) {
            return Err(DirectoryError::Malformed {
                endpoint: endpoint.to_owned(),
                what: format!("{link} repeats a page already read"),
            });
        }
        Ok(next.to_owned())
    }

    /// One GET with auth and retries; a non-success is an error.
    async fn get(&self, url: &str, endpoint: &str) -> Result<Reply, DirectoryError> {
        self.get_preferring(url, endpoint, None).await
    }

    /// [`Self::get`] with a `Prefer` header.
    async fn get_preferring(
        &self,
        url: &str,
        endpoint: &str,
        prefer: Option<&str>,
    ) -> Result<Reply, DirectoryError> {
        let transport = self.transport().await?;
        let mut log = crate::retry::RetryLog::default();
        let outcome = crate::retry::retry(
            transport.retry,
            || self.attempt(transport, url, endpoint, prefer),
            |e, delay| transport.note_retry(&mut log, endpoint, e, delay),
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
        prefer: Option<&str>,
    ) -> Result<Reply, DirectoryError> {
        let mut refreshed = false;
        loop {
            let token = self.inner.tokens.get(|| self.fetch_token()).await?;
            let mut request = transport
                .http()
                .get(url)
                .bearer_auth(token.expose_secret())
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(prefer) = prefer {
                request = request.header("Prefer", prefer);
            }
            let reply = transport.send(request, endpoint).await?;
            if reply.is_success() {
                return Ok(reply);
            }
            if reply.status == 401 && !refreshed {
                // Expired or revoked early (InvalidAuthenticationToken): once more
                // with a fresh token.
                self.inner.tokens.invalidate(&token).await;
                refreshed = true;
                continue;
            }
            let (code, mut detail) = error_body(&reply.body);
            if reply.status == 403 {
                // Graph's "Insufficient privileges to complete the operation."
                // names no permission; say which this read needs.
                detail = format!(
                    "{}; {}",
                    detail.chars().take(120).collect::<String>(),
                    permission_hint(url)
                );
            }
            let wait = remote::retry_after(&reply.headers);
            let error = status_error(
                endpoint,
                &reply,
                code,
                detail,
                wait,
                &[token.expose_secret()],
            );
            return Err(with_reference(error, graph_reference(&reply)));
        }
    }

    async fn fetch_token(&self) -> Result<(SecretString, Duration), DirectoryError> {
        let transport = self.transport().await?;
        let s = &self.inner.settings;
        let tenant = path_segment(&s.tenant_id)
            .map_err(|e| DirectoryError::Settings(format!("directory.tenant_id: {e}")))?;
        let token_url = format!("{}/{tenant}/oauth2/v2.0/token", self.inner.login);
        // National clouds have their own Graph, and their own `.default` scope.
        let scope = format!("{}/.default", self.inner.graph);
        match &s.auth {
            EntraAuth::ClientSecret(secret) => {
                let secret = secret.read()?;
                token_request(
                    transport,
                    &token_url,
                    &[
                        ("client_id", &s.client_id),
                        ("scope", &scope),
                        ("client_secret", secret.expose_secret()),
                        ("grant_type", "client_credentials"),
                    ],
                    &[secret.expose_secret()],
                )
                .await
            }
            EntraAuth::Certificate {
                certificate,
                private_key,
            } => {
                let cert = certificate.read()?;
                let pem = private_key.read()?;
                let thumbprint = jwt::certificate_thumbprint(
                    cert.expose_secret().as_bytes(),
                    &certificate.named("directory.certificate_file"),
                )?;
                let key = jwt::SigningKey::from_pem(
                    pem.expose_secret().as_bytes(),
                    &private_key.named("directory.private_key_file"),
                )?;
                let mut header = serde_json::Map::new();
                header.insert("x5t".into(), thumbprint.into());
                let claims = jwt::assertion_claims(&s.client_id, &token_url, jwt::unix_now())?;
                let assertion = key.sign(header, &claims)?;
                token_request(
                    transport,
                    &token_url,
                    &[
                        ("client_id", &s.client_id),
                        ("scope", &scope),
                        (
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        ),
                        ("client_assertion", &assertion),
                        ("grant_type", "client_credentials"),
                    ],
                    &[&assertion],
                )
                .await
            }
        }
    }
}

/// One token request ([`remote::request_token`]); a refusal carries what
/// Microsoft support asks for to find it ([`token_reference`]).
async fn token_request(
    transport: &Transport,
    token_url: &str,
    form: &[(&str, &str)],
    secrets: &[&str],
) -> Result<(SecretString, Duration), DirectoryError> {
    let reply = remote::request_token(transport, token_url, form).await?;
    let wait = remote::retry_after(&reply.headers);
    remote::token_from(token_url, &reply, secrets, wait)
        .map_err(|e| with_reference(e, token_reference(&reply)))
}

/// Graph's identifiers of a refused request, which a Microsoft support case
/// needs: `request-id` and `date` from the error's `innerError`
/// (`{"error":{"code","message","innerError":{"request-id","date"}}}`), else
/// from the answer's `request-id` and `Date` headers (a gateway's answer
/// without Graph's error body).
fn graph_reference(reply: &Reply) -> Option<String> {
    let parsed: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
    let inner = parsed
        .get("error")
        .and_then(|e| e.get("innerError").or_else(|| e.get("innererror")));
    let field = |name: &str| inner.and_then(|i| i.get(name)).and_then(Value::as_str);
    let header = |name: &str| {
        reply
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let request_id = field("request-id")
        .or_else(|| header("request-id"))
        .filter(|id| !id.is_empty())?;
    let date = field("date").or_else(|| header("date"));
    Some(reference_text(&[
        ("request-id", Some(request_id)),
        ("date", date),
    ]))
}

/// The Microsoft identity platform's identifiers of a refused token request
/// (RFC 6749 error body with `trace_id`, `correlation_id` and `timestamp`),
/// which its `error_description` repeats at its end, past where a long one is
/// cut.
fn token_reference(reply: &Reply) -> Option<String> {
    let parsed: Value = serde_json::from_str(&reply.body).ok()?;
    let field = |name: &str| {
        parsed
            .get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let correlation = field("correlation_id")?;
    Some(reference_text(&[
        ("correlation-id", Some(correlation)),
        ("trace-id", field("trace_id")),
        ("timestamp", field("timestamp")),
    ]))
}

/// `error` with `reference` after its detail, which [`status_error`] cut to
/// length first: the reference is never what is cut. The identity platform's
/// own copy of it (`Trace ID: … Correlation ID: … Timestamp: …`, on lines of
/// their own at the end of `error_description`) is left out.
fn with_reference(error: DirectoryError, reference: Option<String>) -> DirectoryError {
    let Some(reference) = reference else {
        return error;
    };
    with_detail(error, |detail| {
        let detail = match detail.find("Trace ID:") {
            Some(at) if at > 0 => detail[..at].trim_end(),
            _ => detail,
        };
        format!("{detail} (Microsoft {reference})")
    })
}

/// `id` as one path segment of `endpoint`, or a malformed answer: an id Graph
/// handed out that is empty or a dot segment would send the request elsewhere
/// (`/groups/../members` is not that group's members).
fn segment(id: &str, endpoint: &str) -> Result<String, DirectoryError> {
    path_segment(id).map_err(|e| DirectoryError::Malformed {
        endpoint: endpoint.to_owned(),
        what: e.to_string(),
    })
}

/// The cursor: both delta links, the ids of the groups of interest when worth
/// keeping, and, when the configuration names groups, the names configured with
/// the groups of interest whose membership is hidden.
fn links_of(
    tenant: &str,
    users: &str,
    groups: &str,
    interest: Option<&[String]>,
    named: Option<(&[String], &[HiddenGroup])>,
) -> Result<String, DirectoryError> {
    let json = serde_json::to_string(&Cursor {
        users: users.to_owned(),
        groups: groups.to_owned(),
        interest: interest.map(<[String]>::to_vec),
        names: named.map(|(names, _)| names.to_vec()),
        tenant: Some(tenant.to_owned()),
        hidden: named.map(|(_, hidden)| hidden.to_vec()),
    })
    .map_err(|e| DirectoryError::Malformed {
        endpoint: "delta cursor".into(),
        what: e.to_string(),
    })?;
    Ok(format!("{CURSOR_PREFIX}{json}"))
}

/// A group whose members only an app with `Member.Read.Hidden` may list:
/// `visibility` HiddenMembership (set on a Microsoft 365 group at creation).
fn has_hidden_membership(group: &Value) -> bool {
    group
        .get("visibility")
        .and_then(Value::as_str)
        .is_some_and(|v| v.eq_ignore_ascii_case("HiddenMembership"))
}

/// What reading the members of hidden-membership group `name` needs.
fn hidden_membership_hint(name: &str) -> String {
    format!(
        "the members of {name:?} (hidden membership) are listed only to an app with the \
         Microsoft Graph application permission Member.Read.Hidden: grant it to the app \
         registration (directory.client_id), with admin consent"
    )
}

/// A B2B guest: `userType` Guest (a member of another organisation invited in).
fn is_guest(user: &Value) -> bool {
    user.get("userType")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("Guest"))
}

/// A group member that is never a person: a device, a service principal or a
/// contact.
fn is_never_an_identity(member: &Value) -> bool {
    matches!(
        member.get("@odata.type").and_then(Value::as_str),
        Some(
            "#microsoft.graph.device"
                | "#microsoft.graph.servicePrincipal"
                | "#microsoft.graph.orgContact"
        )
    )
}

/// What a 403 from Graph for `url` asks of the app registration: the application
/// permission that read needs (README, "Microsoft Entra ID"), admin-consented.
fn permission_hint(url: &str) -> String {
    let path = url::Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_default();
    let permission = if path.contains("/servicePrincipals") {
        "Application.Read.All (directory.app_id)"
    } else if path.contains("/groups") || path.contains("/transitiveMemberOf") {
        "GroupMember.Read.All"
    } else {
        "User.Read.All"
    };
    format!(
        "the app registration (directory.client_id) needs the Microsoft Graph application \
         permission {permission}, with admin consent"
    )
}

/// Graph answers an expired delta token with 410 Gone or 400 and the code
/// `syncStateNotFound` (or `resyncRequired`): start a full synchronisation again.
fn is_expired_delta(e: &DirectoryError) -> bool {
    match e {
        DirectoryError::Status { status: 410, .. } => true,
        DirectoryError::Status {
            status: 400,
            code: Some(code),
            ..
        } => {
            code.eq_ignore_ascii_case("syncStateNotFound")
                || code.eq_ignore_ascii_case("resyncRequired")
        }
        _ => false,
    }
}

/// Graph's error body: `{"error":{"code":"…","message":"…"}}`.
fn error_body(body: &str) -> (Option<String>, String) {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let error = parsed.get("error");
    let code = error
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    (code, message.unwrap_or_else(|| remote::body_excerpt(body)))
}

fn parse_user(
    v: &Value,
    endpoint: &str,
    user_name: EntraUserName,
) -> Result<Identity, DirectoryError> {
    let id = required_str(v, "id", endpoint)?;
    let text = |field: &str| {
        v.get(field)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    // A user without a mailbox (a sync service account, a break-glass admin)
    // keeps the userPrincipalName as the userName: failing the read for one
    // account, in scope or not, would stop every leaver's deprovisioning.
    let mail = text("mail");
    let user_name = match (user_name, &mail) {
        (EntraUserName::Mail, Some(mail)) => Some(mail.clone()),
        (EntraUserName::Mail, None) => {
            tracing::debug!(user = %id, "no mail: the userName is the userPrincipalName");
            text("userPrincipalName")
        }
        (EntraUserName::UserPrincipalName, _) => text("userPrincipalName"),
    }
    .ok_or_else(|| DirectoryError::Malformed {
        endpoint: endpoint.to_owned(),
        what: format!("user {id:?} has no userPrincipalName"),
    })?;
    // Without `$select=accountEnabled` Graph leaves it out; a missing value must
    // not silently read as enabled or disabled.
    let enabled = v
        .get("accountEnabled")
        .and_then(Value::as_bool)
        .ok_or_else(|| DirectoryError::Malformed {
            endpoint: endpoint.to_owned(),
            what: format!("user {id:?} has no accountEnabled"),
        })?;
    Ok(Identity {
        id: id.to_owned(),
        user_name,
        email: mail,
        given_name: text("givenName"),
        family_name: text("surname"),
        display_name: text("displayName"),
        status: if enabled {
            IdentityStatus::Active
        } else {
            IdentityStatus::Suspended
        },
        department: text("department"),
        groups: Vec::new(),
    })
}

/// An item of a directoryObject collection that `@odata.type` says is not a
/// `kind` (`"user"`, `"group"`). Relations are read without an OData cast
/// (`/transitiveMembers/microsoft.graph.user`): Graph counts a cast on a
/// transitive list as an advanced query, refused without `ConsistencyLevel:
/// eventual`, which reads a lagging index (a member removed a minute ago would
/// keep access). An item without `@odata.type` is kept: left out, a real user
/// would look out of scope.
fn of_another_type(item: &Value, kind: &str) -> bool {
    item.get("@odata.type")
        .and_then(Value::as_str)
        .and_then(|t| t.strip_prefix("#microsoft.graph."))
        .is_some_and(|t| !t.eq_ignore_ascii_case(kind))
}

/// The users and the groups an app's service principal is assigned to, from
/// its `appRoleAssignedTo` items.
fn assigned_principals(
    assignments: &[Value],
) -> Result<(HashSet<String>, HashSet<String>), DirectoryError> {
    let endpoint = "GET /v1.0/servicePrincipals/{id}/appRoleAssignedTo";
    let mut users = HashSet::new();
    let mut groups = HashSet::new();
    for a in assignments {
        let principal = required_str(a, "principalId", endpoint)?.to_owned();
        match a.get("principalType").and_then(Value::as_str) {
            Some("User") => {
                users.insert(principal);
            }
            Some("Group") => {
                groups.insert(principal);
            }
            // Service principals assigned to the app are not people.
            _ => {}
        }
    }
    Ok((users, groups))
}

const NEXT_LINK: &str = "@odata.nextLink";
const DELTA_LINK: &str = "@odata.deltaLink";

/// The page's `key` link (`@odata.nextLink`, `@odata.deltaLink`): `None` when
/// absent (or null), an error when it is there but not a string, which taken
/// for "no link" would end a listing early and make it look whole.
fn link_of(page: &Value, key: &str, endpoint: &str) -> Result<Option<String>, DirectoryError> {
    match page.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(link)) => Ok(Some(link.clone())),
        Some(other) => Err(DirectoryError::Malformed {
            endpoint: endpoint.to_owned(),
            what: format!(
                "{key} is not a string (a URL) but {}",
                remote::body_excerpt(&other.to_string())
            ),
        }),
    }
}

/// The `value` array of one page of a collection (`@odata.nextLink` is the
/// caller's).
fn page_values(mut page: Value, endpoint: &str) -> Result<Vec<Value>, DirectoryError> {
    match page.get_mut("value").map(Value::take) {
        Some(Value::Array(values)) => Ok(values),
        _ => Err(DirectoryError::Malformed {
            endpoint: endpoint.to_owned(),
            what: "no \"value\" array".into(),
        }),
    }
}

/// The identities of a page (or listing) of `/users`: guests left out unless
/// `include_guests`, each user read by [`parse_user`].
fn parse_users(
    users: &[Value],
    endpoint: &str,
    settings: &EntraSettings,
) -> Result<Vec<Identity>, DirectoryError> {
    users
        .iter()
        .filter(|u| settings.include_guests || !is_guest(u))
        .map(|u| parse_user(u, endpoint, settings.user_name))
        .collect()
}

fn parse_group(v: &Value, endpoint: &str) -> Result<(String, String), DirectoryError> {
    let id = required_str(v, "id", endpoint)?;
    let name = required_str(v, "displayName", endpoint)?;
    Ok((id.to_owned(), name.to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn expired_delta_tokens_are_recognised() {
        let status = |status, code: Option<&str>| DirectoryError::Status {
            endpoint: "GET /v1.0/users/delta".into(),
            status,
            code: code.map(str::to_owned),
            detail: String::new(),
            retry_after: None,
        };
        assert!(is_expired_delta(&status(410, None)));
        assert!(is_expired_delta(&status(400, Some("syncStateNotFound"))));
        assert!(is_expired_delta(&status(400, Some("SyncStateNotFound"))));
        assert!(!is_expired_delta(&status(400, Some("Request_BadRequest"))));
        assert!(!is_expired_delta(&status(503, None)));
    }

    #[test]
    fn a_user_without_account_enabled_is_rejected() {
        let v = serde_json::json!({"id": "1", "userPrincipalName": "a@x"});
        assert!(parse_user(&v, "GET /v1.0/users", EntraUserName::default()).is_err());
        let v = serde_json::json!({"id": "1", "userPrincipalName": "a@x", "accountEnabled": false});
        assert_eq!(
            parse_user(&v, "GET /v1.0/users", EntraUserName::default())
                .unwrap()
                .status,
            IdentityStatus::Suspended
        );
    }
}
