//! The SCIM 2.0 workspace client: discovery (`/ServiceProviderConfig`), index paging
//! that survives lying or lazy providers, RFC 9865 cursor paging for providers
//! that page that way, and the writes the executor needs.
//!
//! Managed groups' members come from the groups' `members`, or, for a provider that
//! never shows them (AWS IAM Identity Center), from one `members.value eq` filter
//! per account ([`GroupMembers`], `workspace.group_members`). From `members`, a
//! managed or role group that lacks accounts whose own `groups` (RFC 7643
//! §4.1.2) name it is read on its own, then the workspace once more, and a group
//! still short fails the snapshot: the provider caps `members`, and the accounts
//! past the cap would look absent ([`ScimClient::snapshot_whole`]). Users that
//! carry no `groups` give no such check; a deactivated account, and an entry
//! of `"type": "indirect"` (through a nested group), are not counted: some
//! providers list only active members, and the plan reads a group's own. A
//! deactivated account left out is counted in the managed group its own
//! `groups` names instead, so a reactivated one is seen where it is.
//!
//! Every request goes through `ScimClient::send`: a concurrency permit, the rate
//! limiter, bearer auth, a per-request timeout and [`crate::retry::retry`] for
//! transient failures (connect errors, timeouts, closed connections, 429, 5xx).
//! A write made for an apply that watches a stop ([`crate::apply::until_stopped`])
//! is not retried once the stop is set, nor sent after a provider's pause
//! (`Retry-After`) it was held in: it fails with [`WorkspaceError::is_stopped`].
//! Reads are not stopped (a plan or a verification must not make do with part of
//! the workspace). A create (`POST /Users`, `POST /Groups`) looks up what it
//! makes before each retry, rather than send it again blind after an attempt
//! whose answer was lost (`ScimClient::post_unless_made`). A 2xx whose body is
//! a SCIM Error (RFC 7644 §3.12) is that error, with the status the body
//! claims: taken as success, a refused write would be recorded as made, and a
//! refused listing read as an empty workspace. An error status answered with a
//! web page (a gateway's 502 page, a firewall's block page) is named by the
//! page's title, not quoted: the rest is markup, and may echo the request. A
//! write answered 2xx with a web page (a firewall that blocks with 200) fails;
//! an empty body or JSON a framework labels `text/html` is no page.

mod error;
mod outage;
mod paging;
mod parse;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use governor::clock::DefaultClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

pub use error::WorkspaceError;
pub use outage::{NOT_READ, Outage, ReadStart, Unread};

use crate::apply::StopSignal;
use crate::http::encode_component;
use crate::model::{
    Account, AccountSpec, Attribute, AttributeChange, Role, WorkspaceGroup, WorkspaceSnapshot,
    same_ci, same_name,
};
use crate::retry::{RetryPolicy, Transient};
use parse::ListBody;

const SCHEMA_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const SCHEMA_GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const SCHEMA_PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const SCIM_JSON: &str = "application/scim+json";
/// The endpoints every SCIM service has at its base URL (RFC 7644 §3.2): a 404
/// from one of them means the base URL is wrong, not that a resource is gone.
const COLLECTION_ROOTS: [&str; 3] = ["/ServiceProviderConfig", "/Users", "/Groups"];
/// What an error about an address that is no SCIM endpoint asks to check. A
/// SCIM directory source, which reads through this client, names its own key
/// instead (`crate::directory::scim`).
pub(crate) const WORKSPACE_URL_HINT: &str = "`workspace.url` must be the SCIM base URL, up to \
     and including the version, e.g. https://www.taskade.com/scim/v2";
/// What to do about a token the workspace refuses (401, 403): whichever of the two
/// keys holds it.
pub(crate) const CHECK_TOKEN: &str = "check workspace.token or the file workspace.token_file names (revoked, expired, or short of a scope)";
/// What to do about a 401 or 403 that came as a web page
/// ([`WorkspaceError::answered_by_web_page`]): the SCIM service answers in JSON,
/// so a WAF, proxy or gateway in front of it refused the request (a block page,
/// a sign-in page), and a new token would change nothing.
pub(crate) const CHECK_IN_FRONT: &str = "a page from something in front of the SCIM \
     service, so not the token: check the proxy, firewall or WAF in front of the workspace \
     (its rules and allow-list for this machine's address) and HTTPS_PROXY";
/// What to do about a workspace that cannot be reached at all
/// ([`WorkspaceError::is_unreachable`]).
pub(crate) const CHECK_REACHABLE: &str = "check the host and port in workspace.url, and that \
     this machine reaches that host: DNS, a firewall, or a proxy (HTTPS_PROXY)";
/// The key a redirect's error points at (the base URL is where it came from); a
/// SCIM directory source names its own, like [`WORKSPACE_URL_HINT`].
pub(crate) const WORKSPACE_URL_KEY: &str = "(workspace.url)";

/// How much of an HTML page an error quotes.
const HTML_EXCERPT_CHARS: usize = 120;

/// A body that is markup (a web page, most often): a base URL that reaches a
/// website or a login page rather than the SCIM service. JSON never starts with `<`.
fn looks_like_html(body: &str) -> bool {
    body.trim_start().starts_with('<')
}

/// How an error names a web page that answered with an error status, by its
/// `<title>` ([`crate::http::html_title`]): the SCIM service answers in JSON,
/// errors too, so something in front of it (or a website `workspace.url`
/// reaches) answered instead.
fn web_page(title: &str) -> String {
    format!(
        "{WEB_PAGE}{}{NOT_SCIM_JSON}",
        match title {
            "" => String::new(),
            title => format!(" ({title:?})"),
        }
    )
}

/// The `<title>` of `body` when it is a web page (markup, served as
/// `text/html` or with an `<html` element), else its first `<h1>` (a server's
/// bare "Forbidden" page has no title). An XML error (an API gateway's
/// `<Error><Code>…`) is quoted as it is: its start says what went wrong. A body
/// that is no markup is no page, whatever its type says: frameworks label
/// answers `text/html` unless told otherwise (Rails' `head :no_content` sends a
/// 204 so, a PHP server its JSON), and a write so answered was made.
fn web_page_title<'b>(content_type: Option<&str>, body: &'b str) -> Option<&'b str> {
    // A page saved by an editor may begin with a byte-order mark.
    if !body
        .trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
        .starts_with('<')
    {
        return None;
    }
    let title = crate::http::html_title(content_type, body)?;
    let html_type =
        content_type.is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
    let lower = body.to_ascii_lowercase();
    if !html_type && !lower.contains("<html") {
        return None;
    }
    if !title.is_empty() {
        return Some(title);
    }
    // Offsets in `lower` are offsets in `body`: only ASCII letters changed case.
    let heading = lower
        .find("<h1")
        .and_then(|start| Some(start + lower[start..].find('>')? + 1))
        .and_then(|start| Some(&body[start..start + lower[start..].find("</h1")?]))
        .map(str::trim)
        .filter(|h| !h.contains('<'))
        .unwrap_or_default();
    let end = heading
        .char_indices()
        .take_while(|(i, c)| *i < 100 && !c.is_control())
        .last()
        .map_or(0, |(i, c)| i + c.len_utf8());
    Some(&heading[..end])
}

/// How [`web_page`] begins.
pub(crate) const WEB_PAGE: &str = "an HTML page";
/// How [`web_page`] goes on after the page's title: with [`WEB_PAGE`], what
/// tells an error about a web page from a provider's own `detail`.
pub(crate) const NOT_SCIM_JSON: &str = ", not SCIM JSON: a web server, proxy, firewall or \
     gateway answered instead of the SCIM service";

/// Members per `add` operation / `remove` operations per request.
const MEMBER_CHUNK: usize = 100;

/// The longest `id eq … or id eq …` filter sent, percent-encoded: IIS refuses a
/// query string over 2,048 bytes by default, and `startIndex` and `count` must fit
/// beside it. With UUID ids that is 30 ids a request.
const ID_FILTER_BYTES: usize = 1800;

/// Which attribute carries an account's role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleAttribute {
    /// The multi-valued core `roles` attribute.
    Roles,
    /// Roles are not written; the core `roles` are read when sent, only so the
    /// last-Owner rule knows the Owners.
    None,
    /// A single-valued extension attribute, e.g.
    /// `urn:ietf:params:scim:schemas:extension:taskade:2.0:User:role`.
    Extension { schema: String, attribute: String },
    /// Membership in one workspace group per role (`workspace.role_groups`), for
    /// providers that grant permissions by group rather than by an attribute. The
    /// role is a transport concern like the attributes above: reads turn the
    /// groups' members into [`Account::roles`], so the plan, the guard and the
    /// last-Owner rule see roles exactly as they do with an attribute.
    Groups {
        /// Each role the configuration names and its group's `displayName`
        /// (trimmed); `parse("groups")` leaves it empty for the configuration
        /// to fill.
        groups: Vec<(Role, String)>,
    },
}

impl RoleAttribute {
    /// `"roles"`, `"none"`, `"groups"` (without its groups: see
    /// [`RoleAttribute::Groups`]) or a full extension attribute URN (split at the
    /// last `:`).
    pub fn parse(s: &str) -> Result<RoleAttribute, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("roles") {
            return Ok(RoleAttribute::Roles);
        }
        if s.eq_ignore_ascii_case("groups") {
            return Ok(RoleAttribute::Groups { groups: Vec::new() });
        }
        if s.eq_ignore_ascii_case("none") {
            return Ok(RoleAttribute::None);
        }
        match s.rsplit_once(':') {
            Some((schema, attribute))
                if s.starts_with("urn:") && schema.contains(':') && !attribute.is_empty() =>
            {
                Ok(RoleAttribute::Extension {
                    schema: schema.to_owned(),
                    attribute: attribute.to_owned(),
                })
            }
            _ => Err(format!(
                "unknown role attribute {s:?}; expected \"roles\", \"none\", \"groups\" or an \
                 extension attribute such as \"urn:ietf:params:scim:schemas:extension:acme:2.0:User:role\""
            )),
        }
    }
}

/// How listings are paged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pagination {
    /// Index paging (its pages can be read concurrently), unless the provider's
    /// `/ServiceProviderConfig` announces cursor paging and not index paging, or,
    /// without announcing index paging, answers the first index page with a
    /// `nextCursor` or refuses it with 501 (then the listing is asked without
    /// paging parameters, and a `nextCursor` in that answer is followed).
    #[default]
    Auto,
    /// `startIndex` and `count` (RFC 7644 §3.4.2.4) only.
    Index,
    /// `cursor` and `count` (RFC 9865) only: one page after the other.
    Cursor,
}

impl std::fmt::Display for Pagination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pagination::Auto => "auto",
            Pagination::Index => "index",
            Pagination::Cursor => "cursor",
        })
    }
}

/// Where the members of managed workspace groups (the groups the mappings name)
/// are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupMembers {
    /// From the group's `members` attribute, as listings show it; a managed group
    /// listed without the attribute is read again on its own.
    #[default]
    Listed,
    /// The provider never shows a group's members (AWS IAM Identity Center answers
    /// `"members": []` in listings and reads alike): each account's groups are
    /// asked with `GET /Groups?filter=members.value eq "<account id>"`, one
    /// listing (usually one request) per account per snapshot, and a managed
    /// group's members are the accounts whose answers name it. Unmanaged groups
    /// keep what the provider showed.
    ByMemberFilter,
}

impl std::fmt::Display for GroupMembers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GroupMembers::Listed => "listed",
            GroupMembers::ByMemberFilter => "by_member_filter",
        })
    }
}

#[derive(Debug, Clone)]
pub struct ScimSettings {
    /// Up to and including the version, e.g. `https://www.taskade.com/scim/v2`.
    pub base_url: url::Url,
    pub token: SecretString,
    pub role_attribute: RoleAttribute,
    /// Requested page size; capped by the provider's `filter.maxResults` and
    /// `pagination.maxPageSize`.
    pub page_size: u32,
    pub pagination: Pagination,
    pub max_concurrency: usize,
    /// 0 disables rate limiting.
    pub requests_per_second: u32,
    /// Per request (each attempt).
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// The workspace groups whose memberships the policy manages (`displayName`s,
    /// compared case-insensitively): one listed without members is read again on
    /// its own, as some providers leave `members` out of listings
    /// ([`ScimClient::group_with_members`]).
    pub managed_groups: Vec<String>,
    /// Where those groups' members are read from.
    pub group_members: GroupMembers,
    /// `workspace.ca_file`'s certificates (PEM, checked by
    /// [`crate::http::read_ca_file`]), trusted instead of the system's roots.
    pub ca_pem: Option<Vec<u8>>,
}

#[cfg(test)]
impl ScimSettings {
    /// A unit test's client of `base_url`: token `t`, roles in `roles`, one
    /// request at a time, pages of 100, a 10 s timeout.
    pub(crate) fn for_test(base_url: url::Url) -> ScimSettings {
        ScimSettings {
            base_url,
            token: SecretString::from("t"),
            role_attribute: RoleAttribute::Roles,
            page_size: 100,
            pagination: Pagination::Auto,
            max_concurrency: 1,
            requests_per_second: 0,
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            managed_groups: Vec::new(),
            group_members: GroupMembers::Listed,
            ca_pem: None,
        }
    }
}

/// Reported after each page of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// `"accounts"`, `"people"` (a SCIM directory's Users), `"groups"`, or
    /// `"memberships"` (under [`GroupMembers::ByMemberFilter`]: the accounts whose
    /// groups were asked, `pages` and `objects` alike, of `total` accounts).
    pub what: &'static str,
    pub pages: u64,
    /// Distinct objects so far.
    pub objects: u64,
    /// The provider's `totalResults`, when it sent one.
    pub total: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP attempts made (retries included).
    pub requests: u64,
    /// Attempts that were retries of a transient failure.
    pub retries: u64,
}

/// What `/ServiceProviderConfig` told us.
#[derive(Debug, Clone, Copy, Default)]
struct Discovered {
    max_results: Option<u32>,
    patch_supported: Option<bool>,
    /// RFC 9865 `pagination.cursor` and `pagination.index`.
    cursor_paging: Option<bool>,
    index_paging: Option<bool>,
    /// RFC 9865 `pagination.maxPageSize`.
    max_page_size: Option<u32>,
    /// `etag.supported`: whether a read-modify-write may send `If-Match`.
    etag_supported: Option<bool>,
}

impl Discovered {
    /// Whether the provider said it pages by cursor and not by index.
    fn cursor_only(&self) -> bool {
        self.cursor_paging == Some(true) && self.index_paging == Some(false)
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, NoOpMiddleware>;

struct Inner {
    http: reqwest::Client,
    /// Base URL without a trailing slash.
    base: String,
    token: SecretString,
    role_attribute: RoleAttribute,
    page_size: u32,
    pagination: Pagination,
    max_concurrency: usize,
    timeout: Duration,
    /// The most one answer's body may hold.
    max_body_bytes: usize,
    retry: RetryPolicy,
    permits: Semaphore,
    limiter: Option<Limiter>,
    /// Set by a 429 or 503 with `Retry-After`: no request leaves before then. The
    /// provider throttles the token, not the request, so every request in flight
    /// would otherwise be refused in turn and spend its own retries.
    paused_until: crate::http::ProviderPause,
    discovered: Mutex<Discovered>,
    requests: AtomicU64,
    retries: AtomicU64,
    /// Attempts with a method other than GET.
    write_requests: AtomicU64,
    /// Attempts the workspace answered with a status that says it is up (any
    /// but a 5xx or 408; a 429 is a workspace pacing us): see [`Outage`].
    answers: AtomicU64,
    /// Attempts answered with a status that shows the token was accepted: see
    /// [`ScimClient::served_answers`].
    served_answers: AtomicU64,
    /// The first attempt refused as unauthorized (401) or forbidden (403), and
    /// whether a web page said it: see [`ScimClient::auth_refusal`].
    auth_refusal: Mutex<Option<(String, bool)>>,
    /// Listing pages read and the time they took (µs): what a full re-listing costs.
    pages_read: AtomicU64,
    page_read_micros: AtomicU64,
    /// Set once the provider refused or mishandled an `id eq … or …` filter: from
    /// then on objects are read one by one.
    id_filters_refused: AtomicBool,
    /// Set when, under [`Pagination::Auto`], a listing not asked by cursor was
    /// answered with a `nextCursor`: from then on listings page by cursor.
    cursors_seen: AtomicBool,
    /// Set once a PATCH was answered 501: from then on changes go by PUT.
    patch_refused: AtomicBool,
    /// One lock per resource path a read-modify-write is under way on: two
    /// writes to one resource (a group's additions and removals, an account's
    /// role and reactivation, run side by side in one phase) each PUT back the
    /// whole resource as they read it, and without `If-Match` the later one
    /// would undo the earlier; with it, the two would refuse each other.
    rmw_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// [`ScimSettings::managed_groups`], folded ([`group_name_key`]).
    managed_groups: HashSet<String>,
    group_members: GroupMembers,
    /// Under [`RoleAttribute::Groups`], each role group: its role, its name as
    /// configured and folded ([`group_name_key`], as listed names are).
    role_groups: Vec<RoleGroup>,
    /// The role groups as checks of accounts read them ([`ScimClient::fill_roles`]),
    /// by configured name: read once for the pass, not once per account checked.
    /// A client lives for one pass (a run, a sweep or retry pass, a command), and
    /// a run starts by forgetting them ([`ScimClient::forget_role_groups`]), as
    /// does every request of its own that may change a group's members
    /// ([`ForgetsRoleGroups`]).
    role_groups_read:
        std::sync::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Vec<WorkspaceGroup>>>>>,
}

/// Forgets the role groups read this pass when dropped: at the end of a request
/// that may have changed a group's members, however it ended (an answer lost to
/// a timeout may still have been a change). A read begun before that end may
/// still finish with what it saw; one begun after reads afresh.
struct ForgetsRoleGroups<'c>(&'c ScimClient);

impl Drop for ForgetsRoleGroups<'_> {
    fn drop(&mut self) {
        self.0.forget_role_groups();
    }
}

/// One role's group, as the configuration names it.
#[derive(Debug, Clone)]
struct RoleGroup {
    role: Role,
    name: String,
    folded: String,
}

/// What [`ScimClient::people`] read.
#[derive(Debug, Clone)]
pub struct People {
    /// Each User with the enterprise extension's `department`.
    pub users: Vec<(Account, Option<String>)>,
    pub groups: Vec<WorkspaceGroup>,
    /// For each Group id a User's own `groups` attribute names (RFC 7643
    /// §4.1.2: read-only, direct, nested or dynamic membership), the ids of the
    /// Users that name it: what tells an empty Group from one whose `members`
    /// the provider leaves out.
    pub named_by_users: HashMap<String, Vec<String>>,
    /// The Groups the listing sent without a `members` attribute (RFC 7643
    /// §2.5: absent, null and `[]` all read as none; a provider may leave
    /// `members` out of listings and show it only on a read of its own).
    pub listed_without_members: HashSet<String>,
    /// The ids that a listed Group's `members` marks as Groups (`type` or
    /// `$ref`, RFC 7643 §4.2), whether the listing holds them or not.
    pub marked_groups: HashSet<String>,
    /// The ids that a listed Group's `members` marks as Users.
    pub marked_users: HashSet<String>,
    /// The Users sent without `active` (or with a null one), in listing order.
    pub without_active: Vec<String>,
    /// False when a listing ended short of the `totalResults` it announced.
    pub whole: bool,
}

/// A Group read on its own for its members ([`ScimClient::group_with_members`]).
#[derive(Debug, Clone)]
pub enum GroupRead {
    /// Not found (404): deleted since it was listed, or never there.
    Gone,
    Found {
        group: WorkspaceGroup,
        /// The ids its `members` marks as Groups.
        marked_groups: Vec<String>,
        /// The ids its `members` marks as Users.
        marked_users: Vec<String>,
        /// Whether a read sent `members` at all (perhaps `[]`), plainly or asked
        /// for with `attributes=members`; when false, `group.members` is empty
        /// for want of the attribute, which may hide members.
        members_shown: bool,
        /// The last request made: where the members were (or were not) found.
        endpoint: String,
    },
}

/// The ids a Group body's `members` marks as Groups, and as Users.
fn marks(body: &parse::GroupBody) -> (Vec<String>, Vec<String>) {
    match body {
        parse::GroupBody::Object {
            nested_groups,
            user_members,
            ..
        } => (nested_groups.clone(), user_members.clone()),
        parse::GroupBody::NotObject => (Vec::new(), Vec::new()),
    }
}

/// What [`ScimClient::read_workspace`] read: the snapshot, whether both
/// listings were whole, and the managed and role groups that lack accounts
/// whose own `groups` name them, after they were read on their own.
struct WorkspaceRead {
    snapshot: WorkspaceSnapshot,
    whole: bool,
    short: Vec<ShortGroup>,
}

/// A group that does not hold every account whose own `groups` names it.
#[derive(Debug)]
struct ShortGroup {
    id: String,
    display_name: String,
    /// How many members it shows.
    members: usize,
    /// How many accounts name it.
    named: usize,
    /// The accounts that name it and are not among its members (through a
    /// nested group either), in listing order; never empty.
    missing: Vec<String>,
}

/// How many of a short group's missing accounts its error names; the rest it
/// counts.
const MISSING_NAMED: usize = 3;

/// The error of a workspace read that found `short` still short after it was
/// read on its own and the workspace was read twice. Either side may be wrong:
/// the provider caps the group's `members` (a size limit on multi-valued
/// attributes) or hides some from this token, or the accounts' own `groups`
/// are stale (a provider that does not update them when an account leaves a
/// group, seen on accounts deactivated and reactivated). Only the operator can
/// tell which, so the error names the group, the accounts and both endpoints
/// to compare. Planned from a capped group, the accounts left out would look
/// absent from it; `role` is the role the group gives, if it is a role group.
fn short_group_error(
    snapshot: &WorkspaceSnapshot,
    short: &ShortGroup,
    role: Option<Role>,
) -> WorkspaceError {
    let endpoint = resource_path(&Method::GET, "/Groups", &short.id)
        .map(|path| endpoint_name(&Method::GET, &path, &[]))
        .unwrap_or_else(|_| format!("GET /Groups/{}", short.id));
    let first = short.missing.first().map_or("", String::as_str);
    let user_endpoint = resource_path(&Method::GET, "/Users", first)
        .map(|path| endpoint_name(&Method::GET, &path, &[]))
        .unwrap_or_else(|_| format!("GET /Users/{first}"));
    let mut named: Vec<String> = short
        .missing
        .iter()
        .take(MISSING_NAMED)
        .map(|id| {
            let user_name = snapshot
                .accounts
                .iter()
                .find(|account| account.id == *id)
                .map(|account| format!(" ({})", account.user_name.trim()))
                .unwrap_or_default();
            format!("{id:?}{user_name}")
        })
        .collect();
    let more = short.missing.len().saturating_sub(named.len());
    if more > 0 {
        named.push(format!("{more} more"));
    }
    let accounts = match short.missing.len() {
        1 => "account",
        _ => "accounts",
    };
    let shows = match short.members {
        0 => "no members".to_owned(),
        1 => "1 member".to_owned(),
        n => format!("{n} members"),
    };
    let consequence = match role {
        Some(role) => format!(
            "an account left out would read as not holding the role {role} and be given a \
             role on every run",
            role = role.as_str()
        ),
        None => "an account left out would never be removed from the group, and would be \
                 added to it again on every run"
            .to_owned(),
    };
    WorkspaceError::malformed(
        &endpoint,
        format!(
            "workspace group {:?} shows {shows}, in the listing and read on its own, yet {} of \
             the {} accounts whose own groups name it are not among them ({accounts} {}), in \
             two reads of the workspace: either the provider caps or leaves out part of the \
             group's members (read short, {consequence}), or the accounts' own groups are \
             stale (some providers keep naming a group an account has left, as after it was \
             deactivated and reactivated); compare the group's members (`{endpoint}`) and the \
             account's groups (`{user_endpoint}`) with the workspace's admin console: if the \
             group does not hold {first:?}, its groups are stale, for the provider to fix; if \
             it does, check the provider's limit on the members it returns for a group, and \
             that the token may read every member. Either way, \
             workspace.group_members = \"by_member_filter\" (each account's groups asked of \
             /Groups with a members.value filter, not read from its own groups, for a \
             provider that answers one) reads the groups' side alone",
            short.display_name,
            short.missing.len(),
            short.named,
            named.join(", "),
        ),
    )
}

/// A SCIM 2.0 client; cheap to clone, shared by concurrent tasks.
#[derive(Clone)]
pub struct ScimClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ScimClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimClient")
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

/// A successful answer: status, `ETag` header and raw body (possibly empty).
struct Answer {
    status: u16,
    etag: Option<String>,
    body: String,
}

/// A listed group by its id, and whether the listing sent its `members`.
fn group_and_presence(
    endpoint: &str,
    body: parse::GroupBody,
) -> Result<(String, (WorkspaceGroup, bool)), WorkspaceError> {
    let sent_members = body.sends_members();
    let group = parse::group(endpoint, body)?;
    Ok((group.id.clone(), (group, sent_members)))
}

fn transport_error(endpoint: &str, e: &reqwest::Error) -> WorkspaceError {
    let (message, transient) = crate::http::describe_failure(e);
    WorkspaceError::Transport {
        endpoint: endpoint.to_owned(),
        message,
        transient,
    }
}

impl ScimClient {
    pub fn new(settings: ScimSettings) -> Result<ScimClient, WorkspaceError> {
        ScimClient::with_max_body_bytes(settings, crate::http::MAX_BODY_BYTES)
    }

    /// [`ScimClient::new`] reading at most `max_body_bytes` of any one answer
    /// (`new` takes [`crate::http::MAX_BODY_BYTES`]); a longer body fails the
    /// request as malformed.
    pub fn with_max_body_bytes(
        settings: ScimSettings,
        max_body_bytes: usize,
    ) -> Result<ScimClient, WorkspaceError> {
        match settings.base_url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(WorkspaceError::Settings(format!(
                    "base URL scheme must be http or https, not {other:?}"
                )));
            }
        }
        if settings.base_url.query().is_some() {
            return Err(WorkspaceError::Settings(
                "base URL must not have a query".to_owned(),
            ));
        }
        if settings.max_concurrency == 0 {
            return Err(WorkspaceError::Settings(
                "max_concurrency must be at least 1".to_owned(),
            ));
        }
        // The configuration refuses more than 1000; a caller building the
        // settings itself gets an error here rather than the semaphore's panic.
        if settings.max_concurrency > Semaphore::MAX_PERMITS {
            return Err(WorkspaceError::Settings(format!(
                "max_concurrency must be at most {}",
                Semaphore::MAX_PERMITS
            )));
        }
        let plain_http = settings.base_url.scheme() == "http";
        let http = crate::http::client(settings.timeout, plain_http, settings.ca_pem.as_deref())
            .map_err(|e| WorkspaceError::Settings(format!("HTTP client: {e}")))?;
        let limiter = NonZeroU32::new(settings.requests_per_second).map(|rps| {
            RateLimiter::direct_with_clock(Quota::per_second(rps), DefaultClock::default())
        });
        let role_groups = match &settings.role_attribute {
            RoleAttribute::Groups { groups } => groups
                .iter()
                .map(|(role, name)| RoleGroup {
                    role: *role,
                    name: name.trim().to_owned(),
                    folded: group_name_key(name),
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(ScimClient {
            inner: Arc::new(Inner {
                http,
                base: settings.base_url.as_str().trim_end_matches('/').to_owned(),
                token: settings.token,
                role_attribute: settings.role_attribute,
                page_size: settings.page_size.max(1),
                pagination: settings.pagination,
                max_concurrency: settings.max_concurrency,
                timeout: settings.timeout,
                max_body_bytes,
                retry: settings.retry,
                permits: Semaphore::new(settings.max_concurrency),
                limiter,
                paused_until: crate::http::ProviderPause::default(),
                discovered: Mutex::new(Discovered::default()),
                requests: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                write_requests: AtomicU64::new(0),
                answers: AtomicU64::new(0),
                served_answers: AtomicU64::new(0),
                auth_refusal: Mutex::new(None),
                pages_read: AtomicU64::new(0),
                page_read_micros: AtomicU64::new(0),
                id_filters_refused: AtomicBool::new(false),
                cursors_seen: AtomicBool::new(false),
                patch_refused: AtomicBool::new(false),
                rmw_locks: std::sync::Mutex::default(),
                managed_groups: settings
                    .managed_groups
                    .iter()
                    .map(|name| group_name_key(name))
                    .collect(),
                group_members: settings.group_members,
                role_groups,
                role_groups_read: std::sync::Mutex::default(),
            }),
        })
    }

    /// How many attempts a request gets before its transient failure is final.
    pub fn attempts_per_request(&self) -> usize {
        self.inner.retry.max_retries.saturating_add(1)
    }

    pub fn stats(&self) -> ClientStats {
        ClientStats {
            requests: self.inner.requests.load(Ordering::Relaxed),
            retries: self.inner.retries.load(Ordering::Relaxed),
        }
    }

    /// Attempts (retries included) that were writes: every method but GET.
    pub fn write_requests(&self) -> u64 {
        self.inner.write_requests.load(Ordering::Relaxed)
    }

    /// Attempts the workspace answered with a status that says it is up (a 2xx, a
    /// 4xx but 408): a count that has not moved since a request began means the
    /// workspace answered nothing meanwhile (see [`Outage`]).
    pub fn answers(&self) -> u64 {
        self.inner.answers.load(Ordering::Relaxed)
    }

    /// Attempts the workspace served with seatwarden's token: a 2xx, or a 4xx
    /// other than 401 and 403 (the token refused), 408 and 429 (nothing served).
    /// Unlike [`ScimClient::answers`], which says only that the workspace is up, a
    /// count above zero says it is usable: a revoked token is answered, never served.
    pub fn served_answers(&self) -> u64 {
        self.inner.served_answers.load(Ordering::Relaxed)
    }

    /// The first request the workspace refused as unauthorized (401) or forbidden
    /// (403), as its error reads (endpoint, status, the provider's detail): a
    /// token revoked, expired, mistyped or short of a scope, which only a human
    /// can fix.
    pub fn auth_refusal(&self) -> Option<String> {
        self.inner
            .auth_refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(refusal, _)| refusal.clone())
    }

    /// Whether [`ScimClient::auth_refusal`] was a web page (a WAF's or a
    /// proxy's block page), not the SCIM service's answer: what to check is
    /// then what stands in front of the workspace, not the token.
    pub fn auth_refused_in_front(&self) -> bool {
        self.inner
            .auth_refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|(_, web_page)| *web_page)
    }

    /// The mean time one listing page took to read in this client's life, if any
    /// page with content was read.
    pub fn mean_page_read(&self) -> Option<Duration> {
        let pages = self.inner.pages_read.load(Ordering::Relaxed);
        let micros = self.inner.page_read_micros.load(Ordering::Relaxed);
        (pages > 0).then(|| Duration::from_micros(micros / pages))
    }

    fn record_page_read(&self, took: Duration) {
        self.inner.pages_read.fetch_add(1, Ordering::Relaxed);
        self.inner.page_read_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn discovered(&self) -> Discovered {
        *self
            .inner
            .discovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The page size actually requested: the configured one, capped by the
    /// provider's `filter.maxResults` and `pagination.maxPageSize`, never 0.
    fn effective_page_size(&self) -> u32 {
        let discovered = self.discovered();
        let mut n = self.inner.page_size;
        for max in [discovered.max_results, discovered.max_page_size]
            .into_iter()
            .flatten()
            .filter(|m| *m > 0)
        {
            n = n.min(max);
        }
        n.max(1)
    }

    /// Whether listings page by cursor: configured so, or (under
    /// [`Pagination::Auto`]) the provider announced cursors only or answered an
    /// index listing with a `nextCursor`.
    fn pages_by_cursor(&self) -> bool {
        match self.inner.pagination {
            Pagination::Index => false,
            Pagination::Cursor => true,
            Pagination::Auto => {
                self.discovered().cursor_only() || self.inner.cursors_seen.load(Ordering::Relaxed)
            }
        }
    }

    /// Whether an index listing whose first page carries a `nextCursor` should
    /// follow it: under [`Pagination::Auto`], when the provider did not say it
    /// pages by index (it ignored `startIndex`, as RFC 9865 §2.6 allows a
    /// cursor-only provider to).
    fn follows_unasked_cursors(&self) -> bool {
        self.inner.pagination == Pagination::Auto && self.discovered().index_paging != Some(true)
    }

    /// From now on, listings page by cursor (under [`Pagination::Auto`]).
    fn note_cursor_paging(&self, why: &str) {
        if !self.inner.cursors_seen.swap(true, Ordering::Relaxed) {
            tracing::info!(why, "paging by cursor");
        }
    }

    /// How many pages of a listing are read at once: cursor pages come one after
    /// the other.
    pub fn listing_concurrency(&self) -> usize {
        if self.pages_by_cursor() {
            1
        } else {
            self.inner.max_concurrency
        }
    }

    /// The one way out: permit, rate limit, auth, timeout, retries.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Answer, WorkspaceError> {
        self.send_if_match(method, path, query, body, None).await.0
    }

    /// [`ScimClient::send`] with `If-Match: <version>` when `if_match` is given.
    /// A 412 is not transient (`crate::http::status_is_transient`): sent again,
    /// the same version would be refused again. Also whether it was sent again
    /// after an attempt the workspace may have carried out unanswered (no answer,
    /// or a 5xx, which a proxy gives after a timeout): a 412 then may be that
    /// attempt's own change of the version.
    async fn send_if_match(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> (Result<Answer, WorkspaceError>, bool) {
        let endpoint = endpoint_name(&method, path, query);
        let mut url = format!("{}{path}", self.inner.base);
        if !query.is_empty() {
            let encoded: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
                .collect();
            url.push('?');
            url.push_str(&encoded.join("&"));
        }
        let body_bytes = match body {
            Some(v) => match serde_json::to_vec(v) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    let e = WorkspaceError::malformed(&endpoint, format!("request body: {e}"));
                    return (Err(e), false);
                }
            },
            None => None,
        };
        let inner = &self.inner;
        let stop = writes_stop(&method);
        let mut log = crate::retry::RetryLog::default();
        // Counted as each retry is made, not when it is announced (`on_retry`): a
        // stop that ends the wait before it withdraws it.
        let mut tried = false;
        let mut resent_unanswered = false;
        let outcome = crate::retry::retry_unless_stopped(
            inner.retry,
            stop.as_ref(),
            || {
                if std::mem::replace(&mut tried, true) {
                    inner.retries.fetch_add(1, Ordering::Relaxed);
                }
                self.attempt(
                    &method,
                    &url,
                    &endpoint,
                    body_bytes.clone(),
                    if_match,
                    stop.as_ref(),
                )
            },
            |e, delay| {
                resent_unanswered |= matches!(e, WorkspaceError::Transport { .. })
                    || e.status().is_some_and(|status| status >= 500);
                log.retrying(&endpoint, &inner.retry, e, delay)
            },
            |last| WorkspaceError::stopped(&endpoint, Some(&last)),
        )
        .await;
        log.finished(&endpoint, &outcome);
        (outcome, resent_unanswered)
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        endpoint: &str,
        body: Option<Vec<u8>>,
        if_match: Option<&str>,
        stop: Option<&StopSignal>,
    ) -> Result<Answer, WorkspaceError> {
        let inner = &self.inner;
        let _permit = inner
            .permits
            .acquire()
            .await
            .map_err(|_| WorkspaceError::Settings("client is shut down".to_owned()))?;
        // Nothing has left yet: a stop during a provider's pause (up to
        // `max_retry_after`) keeps the write back rather than sending it late.
        if !self.wait_out_pause(stop).await {
            return Err(WorkspaceError::stopped(endpoint, None));
        }
        if let Some(limiter) = &inner.limiter {
            limiter.until_ready().await;
        }
        inner.requests.fetch_add(1, Ordering::Relaxed);
        if *method != Method::GET {
            inner.write_requests.fetch_add(1, Ordering::Relaxed);
        }
        // Not `then_some`: its argument is made either way, and dropped at once.
        let _forgets = self
            .may_change_members(method, url)
            .then(|| ForgetsRoleGroups(self));
        let mut request = inner
            .http
            .request(method.clone(), url)
            .timeout(inner.timeout)
            .bearer_auth(inner.token.expose_secret())
            .header(
                reqwest::header::ACCEPT,
                "application/scim+json, application/json",
            );
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, SCIM_JSON)
                .body(body);
        }
        if let Some(version) = if_match {
            request = request.header(reqwest::header::IF_MATCH, version);
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(endpoint, &e))?;
        let status = response.status().as_u16();
        let retry_after = crate::http::retry_after(response.headers());
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        if let Some(detail) = crate::http::redirect_detail(status, response.headers()) {
            return Err(WorkspaceError::Status {
                endpoint: endpoint.to_owned(),
                status,
                scim_type: None,
                detail: format!("{detail} {WORKSPACE_URL_KEY}"),
                retry_after: None,
            });
        }
        if matches!(status, 429 | 503)
            && let Some(asked) = retry_after
        {
            inner.paused_until.pause_for(
                asked.min(inner.retry.max_retry_after),
                "the workspace",
                endpoint,
                status,
            );
        }
        let text = crate::http::body_text(response, inner.max_body_bytes)
            .await
            .map_err(|e| match e {
                crate::http::BodyError::Read(e) => transport_error(endpoint, &e),
                // Not transient: asked again, it would be as large.
                too_large @ crate::http::BodyError::TooLarge { .. } => {
                    WorkspaceError::malformed(endpoint, too_large.to_string())
                }
            })?;
        if status == 429 || !crate::http::status_is_transient(status) {
            inner.answers.fetch_add(1, Ordering::Relaxed);
        }
        if (200..500).contains(&status) && !matches!(status, 401 | 403 | 408 | 429) {
            inner.served_answers.fetch_add(1, Ordering::Relaxed);
        }
        // A firewall may answer a request it blocks with 200 and its page (F5
        // BIG-IP ASM's "Request Rejected"): a write taken as made so was only
        // found undone by its verification, with nothing to say why. No write is
        // answered with a web page. (A read's body is parsed, and its error names
        // the page: see `get_json`.)
        if (200..300).contains(&status)
            && *method != Method::GET
            && let Some(title) = web_page_title(content_type.as_deref(), &text)
        {
            return Err(WorkspaceError::malformed(
                endpoint,
                format!("HTTP {status} with {}", web_page(&self.redact(title))),
            ));
        }
        let claimed = if (200..300).contains(&status) {
            match parse::error_in_success(&text) {
                None => {
                    return Ok(Answer {
                        status,
                        etag,
                        body: text,
                    });
                }
                Some(None) => {
                    let (_, detail) = parse::error_body(&text, &|s| self.redact(s).into_owned());
                    return Err(WorkspaceError::malformed(
                        endpoint,
                        format!(
                            "HTTP {status} with a SCIM Error body and no error status in it: {detail}"
                        ),
                    ));
                }
                Some(Some(claimed)) => Some(claimed),
            }
        } else {
            None
        };
        // The error a 2xx body claims is the answer: a 409 in it is a conflict.
        let answered = status;
        let status = claimed.unwrap_or(status);
        // Belt and braces: a provider echoing the Authorization header must not
        // smuggle the token into an error message. Redacted before the detail is
        // cut to length, which would leave a piece of it that no longer matches.
        let (scim_type, mut detail) = match web_page_title(content_type.as_deref(), &text) {
            // A web page is no SCIM error: a gateway's 502 page, a proxy's or
            // a firewall's block page. Its first 300 characters were markup
            // and styles that said nothing of what went wrong.
            Some(title) if claimed.is_none() => (None, web_page(&self.redact(title))),
            _ => parse::error_body(&text, &|s| self.redact(s).into_owned()),
        };
        if claimed.is_some() {
            detail = format!("{detail} (sent in a SCIM Error body with HTTP {answered})");
        }
        let error = WorkspaceError::Status {
            endpoint: endpoint.to_owned(),
            status,
            scim_type,
            detail,
            retry_after,
        };
        if matches!(status, 401 | 403) {
            inner
                .auth_refusal
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert_with(|| (error.to_string(), error.answered_by_web_page()));
        }
        Err(error)
    }

    /// Holds every request until the provider's last `Retry-After` has passed;
    /// false when `stop` was set first.
    async fn wait_out_pause(&self, stop: Option<&StopSignal>) -> bool {
        loop {
            if stop.is_some_and(StopSignal::is_stopped) {
                return false;
            }
            match self.inner.paused_until.until() {
                // Looked at again after the sleep: another 429 may have moved it.
                Some(until) => match stop {
                    None => tokio::time::sleep_until(until).await,
                    Some(stop) => tokio::select! {
                        () = stop.stopped() => return false,
                        () = tokio::time::sleep_until(until) => {}
                    },
                },
                None => return true,
            }
        }
    }

    /// `text` without the bearer token.
    fn redact<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        let token = self.inner.token.expose_secret();
        if token.is_empty() || !text.contains(token) {
            std::borrow::Cow::Borrowed(text)
        } else {
            std::borrow::Cow::Owned(text.replace(token, "[redacted]"))
        }
    }

    /// A 2xx body parsed as JSON; when it is not, the error quotes the body with
    /// the token redacted (a debugging proxy that echoes the request headers).
    fn json_answer<R: DeserializeOwned>(
        &self,
        endpoint: &str,
        body: &str,
    ) -> Result<R, WorkspaceError> {
        parse::json_body(endpoint, body).or_else(|_| parse::json_body(endpoint, &self.redact(body)))
    }

    async fn get_json<R: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(String, R), WorkspaceError> {
        let endpoint = endpoint_name(&Method::GET, path, query);
        let answer = self
            .send(Method::GET, path, query, None)
            .await
            .map_err(|e| match e {
                WorkspaceError::Status {
                    endpoint,
                    status: 404,
                    scim_type,
                    detail,
                    retry_after,
                } if COLLECTION_ROOTS.contains(&path) => WorkspaceError::Status {
                    endpoint,
                    status: 404,
                    scim_type,
                    detail: format!(
                        "{}; {}",
                        // 300 characters of a 404 page's markup tell nothing.
                        if looks_like_html(&detail) {
                            "an HTML page"
                        } else {
                            detail.as_str()
                        },
                        self.base_url_hint(path)
                    ),
                    retry_after,
                },
                other => other,
            })?;
        let value = self
            .json_answer(&endpoint, &answer.body)
            .map_err(|e| match e {
                // The hint first: the markup would bury it. Its start is kept, as a
                // proxy or login page may say what it is.
                WorkspaceError::Malformed { endpoint, .. } if looks_like_html(&answer.body) => {
                    WorkspaceError::Malformed {
                        endpoint,
                        what: format!(
                            "an HTML page, not SCIM JSON; {}; the page begins: {}",
                            self.base_url_hint(path),
                            error::truncate(&self.redact(&answer.body), HTML_EXCERPT_CHARS)
                        ),
                    }
                }
                other => other,
            })?;
        Ok((endpoint, value))
    }

    /// What to check when the address asked is no SCIM endpoint: the URL asked
    /// (without any credentials in it) and what `workspace.url` must be. A base URL
    /// that stops short of `/scim/v2` is the usual first mistake, and the 404 page
    /// or web app answering it says nothing about SCIM.
    /// The SCIM base URL this client talks to (without a trailing `/`): what the
    /// state database records as its workspace ([`crate::run::same_workspace`]).
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    fn base_url_hint(&self, path: &str) -> String {
        let asked = match url::Url::parse(&format!("{}{path}", self.inner.base)) {
            Ok(mut url) => {
                // Cannot fail on an http(s) URL, the only kind a client is made with.
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.to_string()
            }
            Err(_) => path.to_owned(),
        };
        format!("asked {asked}: {WORKSPACE_URL_HINT}")
    }

    /// Reads `/ServiceProviderConfig`. A provider without one (404, 500, 501, an
    /// error body, a body that is not JSON) is tolerated: defaults apply, and the
    /// log says which URL was asked (a wrong `workspace.url` fails at the first
    /// listing, which names it too).
    /// Authentication failures and unreachable servers are errors, and so is a
    /// 502, 503 or 504 that outlasted the retries: a gateway with no service
    /// behind it, not a provider without the endpoint; and a 429 or 408 that did:
    /// a provider pacing us, or timing us out, whose answer is still to come.
    /// Tolerated, any of them would send the run on to spend the retries again on
    /// its first real read, and a throttled discovery would leave the run without
    /// the provider's ETags (its read-modify-writes then sent without `If-Match`).
    pub async fn discover(&self) -> Result<(), WorkspaceError> {
        self.discover_tolerating().await.map(|_| ())
    }

    /// [`ScimClient::discover`], and the error it tolerated, if it did: what
    /// `check-config --connect` says instead of "not said" for everything.
    async fn discover_tolerating(&self) -> Result<Option<WorkspaceError>, WorkspaceError> {
        let (_, config) = match self.get_json::<Value>("/ServiceProviderConfig", &[]).await {
            Ok(found) => found,
            Err(
                e @ WorkspaceError::Status {
                    status: 401 | 403 | 408 | 429 | 502 | 503 | 504,
                    ..
                },
            ) => return Err(e),
            Err(e @ (WorkspaceError::Transport { .. } | WorkspaceError::Settings(_))) => {
                return Err(e);
            }
            Err(e) => {
                tracing::info!(error = %e, "no usable ServiceProviderConfig; using defaults");
                return Ok(Some(e));
            }
        };
        let number = |v: &Value| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        let flag = |v: &Value| match v {
            Value::Bool(b) => Some(*b),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        let max_results = config
            .get("filter")
            .and_then(|f| f.get("maxResults"))
            .and_then(number)
            .filter(|m| *m > 0)
            .map(|m| u32::try_from(m).unwrap_or(u32::MAX));
        let patch_supported = config
            .get("patch")
            .and_then(|p| p.get("supported"))
            .and_then(flag);
        let etag_supported = config
            .get("etag")
            .and_then(|p| p.get("supported"))
            .and_then(flag);
        // RFC 9865 §4; attribute names are case-insensitive (RFC 7643 §2.1).
        let pagination = config
            .as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("pagination")))
            .map(|(_, v)| v);
        let pagination_attr = |name: &str| {
            pagination
                .and_then(Value::as_object)
                .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
                .map(|(_, v)| v)
        };
        let discovered = Discovered {
            max_results,
            patch_supported,
            cursor_paging: pagination_attr("cursor").and_then(flag),
            index_paging: pagination_attr("index").and_then(flag),
            max_page_size: pagination_attr("maxPageSize")
                .and_then(number)
                .filter(|m| *m > 0)
                .map(|m| u32::try_from(m).unwrap_or(u32::MAX)),
            etag_supported,
        };
        if patch_supported == Some(false) {
            tracing::info!(
                "the provider says it does not support PATCH: changes are written by \
                 reading the resource and replacing it whole (PUT)"
            );
        }
        tracing::debug!(?discovered, "discovered ServiceProviderConfig");
        if self.inner.pagination == Pagination::Cursor && discovered.cursor_paging == Some(false) {
            tracing::warn!(
                "pagination = \"cursor\" is configured, but the provider's \
                 ServiceProviderConfig says it does not page by cursor"
            );
        }
        *self
            .inner
            .discovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = discovered;
        Ok(None)
    }

    /// All Users and all Groups (with members), listed concurrently.
    pub async fn snapshot(
        &self,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<WorkspaceSnapshot, WorkspaceError> {
        Ok(self.snapshot_whole(progress).await?.0)
    }

    /// [`ScimClient::snapshot`], and whether both listings reached the
    /// `totalResults` they announced: a listing by index that objects moved
    /// through (created or deleted meanwhile) can end short, and what it left out
    /// is not proof of absence.
    ///
    /// A managed or role group that lacks accounts whose own `groups` (RFC 7643
    /// §4.1.2) name it is read on its own ([`ScimClient::read_workspace`]);
    /// still short, the workspace is read once more, as the Users and the
    /// Groups are listed at the same time and a member removed in between is
    /// named by an account read before and missing from a group read after (read
    /// again, the removal shows on both sides); still short, the read fails
    /// ([`short_group_error`]): the provider caps the group's `members` (planned
    /// from what it showed, the accounts past the cap would look absent from
    /// the group), or the accounts' own `groups` are stale, which only the
    /// operator can tell apart.
    pub async fn snapshot_whole(
        &self,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<(WorkspaceSnapshot, bool), WorkspaceError> {
        let mut read = self.read_workspace(progress).await?;
        if let Some(short) = read.short.first() {
            tracing::warn!(
                group = %short.display_name,
                missing = short.missing.len(),
                "a workspace group lacks accounts whose own groups name it, listed and read on \
                 its own; reading the workspace again"
            );
            read = self.read_workspace(progress).await?;
        }
        if let Some(short) = read.short.first() {
            let role = self.role_of_group(&short.display_name);
            return Err(short_group_error(&read.snapshot, short, role));
        }
        Ok((read.snapshot, read.whole))
    }

    /// Every account and group, listed concurrently, each managed or role
    /// group with its members: read on its own when listed without them; under
    /// [`GroupMembers::Listed`], read on its own too when it lacks accounts
    /// whose own `groups` name it (a provider may cap `members` in listings
    /// and send them whole for one group), taking that read's members when it
    /// shows more; under [`GroupMembers::ByMemberFilter`], from the filters.
    async fn read_workspace(
        &self,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<WorkspaceRead, WorkspaceError> {
        let accounts = self.list_users_naming_groups(progress);
        let groups = paging::list_all(self, "/Groups", "groups", progress, group_and_presence);
        let (accounts, groups) = futures::try_join!(accounts, groups)?;
        let whole = accounts.whole && groups.whole;
        let mut named_by: HashMap<String, Vec<String>> = HashMap::new();
        // Some providers list only active members of a group while a
        // deactivated account's own `groups` still names it: no cap, so not
        // counted in the check, but counted in the group
        // ([`ScimClient::count_in_deactivated`]).
        let mut named_by_deactivated: HashMap<String, Vec<String>> = HashMap::new();
        let mut accounts: Vec<Account> = accounts
            .items
            .into_iter()
            .map(|(account, named)| {
                if !account.active {
                    for group_id in named {
                        named_by_deactivated
                            .entry(group_id)
                            .or_default()
                            .push(account.id.clone());
                    }
                    return account;
                }
                for group_id in named {
                    named_by
                        .entry(group_id)
                        .or_default()
                        .push(account.id.clone());
                }
                account
            })
            .collect();
        let (groups, short) = match self.inner.group_members {
            GroupMembers::Listed => {
                let (mut groups, read_on_their_own) =
                    self.read_members_left_out_noting(groups.items).await?;
                self.read_short_groups_on_their_own(&mut groups, &named_by, &read_on_their_own)
                    .await?;
                let short = self.short_groups(&groups, &named_by);
                self.count_in_deactivated(&mut groups, &named_by_deactivated);
                (groups, short)
            }
            // The filters ask each account's groups: nothing is capped there.
            GroupMembers::ByMemberFilter => (
                self.members_by_member_filter(&accounts, groups.items, progress)
                    .await?,
                Vec::new(),
            ),
        };
        // The role groups are among the groups just read, members and all.
        self.assign_roles(&mut accounts, &groups);
        Ok(WorkspaceRead {
            snapshot: WorkspaceSnapshot { accounts, groups },
            whole,
            short,
        })
    }

    /// Puts each deactivated account back among the members of a managed
    /// group its own `groups` names (`named_by_deactivated`: group id →
    /// account ids) and the group holds neither directly nor through
    /// nesting: a provider that lists only active members. Read from the
    /// group alone, an account the plan reactivates would look out of a
    /// group it is in: not taken out of one no mapping gives it (it came
    /// back with that access, and the plan said nothing), and added again to
    /// one it keeps. What is counted so may be stale (a provider that does not
    /// update a User's `groups` when it leaves a group): the plan changes a
    /// deactivated account's memberships only when it reactivates it, so a
    /// removal the workspace cannot make is not planned on every run.
    fn count_in_deactivated(
        &self,
        groups: &mut [WorkspaceGroup],
        named_by_deactivated: &HashMap<String, Vec<String>>,
    ) {
        if named_by_deactivated.is_empty() {
            return;
        }
        let left_out: Vec<(usize, Vec<String>)> = {
            let by_id: HashMap<&str, &WorkspaceGroup> =
                groups.iter().map(|g| (g.id.as_str(), g)).collect();
            groups
                .iter()
                .enumerate()
                .filter(|(_, group)| {
                    self.inner
                        .managed_groups
                        .contains(&group_name_key(&group.display_name))
                })
                .filter_map(|(i, group)| {
                    let named = named_by_deactivated.get(&group.id)?;
                    let held = group.members_through_nesting(&by_id);
                    let mut missing: Vec<String> = named
                        .iter()
                        .filter(|id| !held.contains(id.as_str()))
                        .cloned()
                        .collect();
                    missing.sort_unstable();
                    missing.dedup();
                    (!missing.is_empty()).then_some((i, missing))
                })
                .collect()
        };
        for (i, missing) in left_out {
            if let Some(group) = groups.get_mut(i) {
                tracing::debug!(
                    group = %group.display_name,
                    accounts = missing.len(),
                    "deactivated accounts whose own groups name a workspace group its members \
                     leave out are counted in it"
                );
                group.members.extend(missing);
            }
        }
    }

    /// Every account on `/Users` with the ids of the groups its own `groups`
    /// attribute names (none when the provider does not send it).
    async fn list_users_naming_groups(
        &self,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<paging::Listing<(Account, Vec<String>)>, WorkspaceError> {
        let role_attribute = &self.inner.role_attribute;
        paging::list_all(
            self,
            "/Users",
            "accounts",
            progress,
            |endpoint, user: parse::PersonBody| {
                let account = parse::account(endpoint, &user.0, role_attribute)?;
                // The plan compares a group's own members: a membership
                // through a nested group says nothing of them.
                let named = parse::group_ids_not_indirect(&user.0);
                Ok((account.id.clone(), (account, named)))
            },
        )
        .await
    }

    /// The managed and role groups that lack accounts whose own `groups` name
    /// them, directly or through a group nested in them, in listing order.
    fn short_groups(
        &self,
        groups: &[WorkspaceGroup],
        named_by: &HashMap<String, Vec<String>>,
    ) -> Vec<ShortGroup> {
        if named_by.is_empty() {
            return Vec::new();
        }
        let by_id: HashMap<&str, &WorkspaceGroup> =
            groups.iter().map(|g| (g.id.as_str(), g)).collect();
        groups
            .iter()
            .filter(|group| self.reads_members_of(&group.display_name))
            .filter_map(|group| {
                let named = named_by.get(&group.id)?;
                let held = group.members_through_nesting(&by_id);
                let missing: Vec<String> = named
                    .iter()
                    .filter(|id| !held.contains(id.as_str()))
                    .cloned()
                    .collect();
                (!missing.is_empty()).then(|| ShortGroup {
                    id: group.id.clone(),
                    display_name: group.display_name.clone(),
                    members: group.members.len(),
                    named: named.len(),
                    missing,
                })
            })
            .collect()
    }

    /// Each group [`ScimClient::short_groups`] finds, unless it was read on its
    /// own already (listed without members), is read on its own
    /// ([`ScimClient::group_with_members`]): RFC 7644 has no paging of an
    /// attribute's values, and a provider may cap `members` in listings only.
    /// What that read shows replaces the listing's when it shows more.
    async fn read_short_groups_on_their_own(
        &self,
        groups: &mut [WorkspaceGroup],
        named_by: &HashMap<String, Vec<String>>,
        read_on_their_own: &HashSet<String>,
    ) -> Result<(), WorkspaceError> {
        let short: Vec<String> = self
            .short_groups(groups, named_by)
            .into_iter()
            .map(|short| short.id)
            .filter(|id| !read_on_their_own.contains(id))
            .collect();
        for id in short {
            // Gone since the listing: what the listing showed is all there is.
            if let GroupRead::Found { group: read, .. } = self.group_with_members(&id).await?
                && let Some(listed) = groups.iter_mut().find(|g| g.id == id)
                && read.members.len() > listed.members.len()
            {
                tracing::info!(
                    group = %listed.display_name,
                    listed = listed.members.len(),
                    read = read.members.len(),
                    "a workspace group read on its own shows more members than the Groups listing"
                );
                listed.members = read.members;
            }
        }
        Ok(())
    }

    /// Every account on `/Users`, without the groups, and whether the listing
    /// reached the `totalResults` it announced, decided as for
    /// [`ScimClient::snapshot_whole`]: an account it lacks is absent only when it is
    /// whole. Roles are not filled from role groups (see
    /// [`ScimClient::roles_by_group`]): what it is read for is who holds which
    /// userName.
    pub async fn users_whole(
        &self,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<(Vec<Account>, bool), WorkspaceError> {
        let listing = self.list_users(progress).await?;
        Ok((listing.items, listing.whole))
    }

    async fn list_users(
        &self,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<paging::Listing<Account>, WorkspaceError> {
        let role_attribute = &self.inner.role_attribute;
        paging::list_all(
            self,
            "/Users",
            "accounts",
            progress,
            |endpoint, user: parse::UserBody| {
                let account = parse::account(endpoint, &user.0, role_attribute)?;
                Ok((account.id.clone(), account))
            },
        )
        .await
    }

    /// The requests a listing of `objects` objects costs at the page size asked
    /// (at least one: an empty listing is still asked for).
    pub fn listing_pages(&self, objects: u64) -> usize {
        let pages = objects
            .div_ceil(u64::from(self.effective_page_size()))
            .max(1);
        usize::try_from(pages).unwrap_or(usize::MAX)
    }

    /// Whether roles travel by membership in role groups ([`RoleAttribute::Groups`]).
    pub fn roles_by_group(&self) -> bool {
        matches!(self.inner.role_attribute, RoleAttribute::Groups { .. })
    }

    /// The role whose group answers to `display_name` (trimmed, case aside), if any.
    fn role_of_group(&self, display_name: &str) -> Option<Role> {
        let folded = group_name_key(display_name);
        self.inner
            .role_groups
            .iter()
            .find(|g| g.folded == folded)
            .map(|g| g.role)
    }

    /// Whether a group's members must be known, not just what a listing happened
    /// to show: a managed group's (the plan diffs them) and, under
    /// [`RoleAttribute::Groups`], a role group's (they are the accounts' roles; a
    /// role group read empty would make every account roleless, and the plan
    /// would set everyone's role on every run).
    fn reads_members_of(&self, display_name: &str) -> bool {
        self.inner
            .managed_groups
            .contains(&group_name_key(display_name))
            || self.role_of_group(display_name).is_some()
    }

    /// Under [`RoleAttribute::Groups`], sets each account's roles to the roles
    /// whose groups (among `groups`) list it, highest first; the core `roles`
    /// attribute is not read then, as the provider's own idea of a role (often a
    /// default it falls back to) is not what grants access. Several groups
    /// answering to one role's name all count: a member of either holds the role,
    /// and the last-Owner rule must count them all.
    fn assign_roles(&self, accounts: &mut [Account], groups: &[WorkspaceGroup]) {
        if !self.roles_by_group() {
            return;
        }
        let mut roles_of: HashMap<&str, Vec<Role>> = HashMap::new();
        for group in groups {
            let Some(role) = self.role_of_group(&group.display_name) else {
                continue;
            };
            for member in &group.members {
                let roles = roles_of.entry(member.as_str()).or_default();
                if !roles.contains(&role) {
                    roles.push(role);
                }
            }
        }
        for account in accounts {
            let mut roles = roles_of.remove(account.id.as_str()).unwrap_or_default();
            roles.sort_unstable_by(|a, b| b.cmp(a));
            account.roles = roles.iter().map(|r| r.as_str().to_owned()).collect();
        }
    }

    /// [`ScimClient::assign_roles`] for accounts read without the groups: the
    /// role groups are read for them ([`ScimClient::role_groups_now`]). A
    /// verification, an approval's re-check or a sweep judges roles by these
    /// reads as the plan did by the snapshot.
    async fn fill_roles(&self, accounts: &mut [Account]) -> Result<(), WorkspaceError> {
        if !self.roles_by_group() || accounts.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = accounts.iter().map(|a| a.id.clone()).collect();
        let groups = self.role_groups_this_pass(&ids).await?;
        self.assign_roles(accounts, &groups);
        Ok(())
    }

    /// Forgets the role groups read for checks ([`ScimClient::fill_roles`]): the
    /// next check reads them again. A run starts with it.
    pub fn forget_role_groups(&self) {
        self.role_groups_read().clear();
    }

    fn role_groups_read(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::OnceCell<Vec<WorkspaceGroup>>>>>
    {
        self.inner
            .role_groups_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a request may change a group's members: any write to `/Groups`
    /// (a new group may answer to a role group's name too), and a User deleted,
    /// whom the provider drops from its groups.
    fn may_change_members(&self, method: &Method, url: &str) -> bool {
        let path = url.strip_prefix(self.inner.base.as_str()).unwrap_or(url);
        (*method != Method::GET && path.starts_with("/Groups"))
            || (*method == Method::DELETE && path.starts_with("/Users"))
    }

    /// [`ScimClient::fill_roles`] for one account, if there is one.
    async fn filled(&self, account: Option<Account>) -> Result<Option<Account>, WorkspaceError> {
        let Some(account) = account else {
            return Ok(None);
        };
        let mut one = [account];
        self.fill_roles(&mut one).await?;
        let [account] = one;
        Ok(Some(account))
    }

    /// Every workspace group answering to a configured role group's name, read
    /// now (one `displayName eq` filter per role group, at once), with their
    /// members as far as `account_ids` go: the members a read shows (a group
    /// listed without them is read again on its own); under
    /// [`GroupMembers::ByMemberFilter`], which shows none, the accounts among
    /// `account_ids` whose groups (asked one account at a time) include it.
    /// A role group the workspace lacks is simply not among them.
    async fn role_groups_now(
        &self,
        account_ids: &[String],
    ) -> Result<Vec<WorkspaceGroup>, WorkspaceError> {
        let reads = self
            .inner
            .role_groups
            .iter()
            .map(|g| self.role_groups_named(&g.name));
        let groups = futures::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .collect();
        self.with_members_among(groups, account_ids).await
    }

    /// [`ScimClient::role_groups_now`] for checks of accounts: each role group is
    /// read once for the pass (see [`Inner::role_groups_read`]), however many
    /// accounts are checked and however many at once. Writes read afresh.
    async fn role_groups_this_pass(
        &self,
        account_ids: &[String],
    ) -> Result<Vec<WorkspaceGroup>, WorkspaceError> {
        let reads = self.inner.role_groups.iter().map(|g| async move {
            let read = Arc::clone(self.role_groups_read().entry(g.name.clone()).or_default());
            read.get_or_try_init(|| self.role_groups_named(&g.name))
                .await
                .cloned()
        });
        let groups = futures::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .collect();
        self.with_members_among(groups, account_ids).await
    }

    /// Role `groups` as read, with their members as far as `account_ids` go (see
    /// [`ScimClient::role_groups_now`]).
    async fn with_members_among(
        &self,
        mut groups: Vec<WorkspaceGroup>,
        account_ids: &[String],
    ) -> Result<Vec<WorkspaceGroup>, WorkspaceError> {
        if self.members_by_filter() {
            for group in &mut groups {
                group.members.clear();
            }
            let by_id: HashMap<String, usize> = groups
                .iter()
                .enumerate()
                .map(|(index, g)| (g.id.clone(), index))
                .collect();
            if by_id.is_empty() {
                return Ok(groups);
            }
            // As in `members_by_member_filter`: in account order, at most
            // `max_concurrency` at a time, each future owning what it needs.
            let mut probes = futures::stream::iter(account_ids.iter().cloned().map(|id| {
                let client = self.clone();
                async move { client.groups_of_member(&id).await.map(|found| (id, found)) }
            }))
            .buffered(self.inner.max_concurrency);
            while let Some(answer) = probes.next().await {
                let (account_id, found) = answer?;
                for group_id in found {
                    if let Some(group) = by_id.get(&group_id).and_then(|&i| groups.get_mut(i)) {
                        group.members.push(account_id.clone());
                    }
                }
            }
        }
        Ok(groups)
    }

    /// [`ScimClient::groups_named`], each group with its members: one that the
    /// filtered answer sent without `members` is read again on its own (unless
    /// members are only found by filter).
    async fn role_groups_named(
        &self,
        display_name: &str,
    ) -> Result<Vec<WorkspaceGroup>, WorkspaceError> {
        let filter = format!("displayName eq {}", parse::filter_string(display_name));
        let found = self
            .find(
                "/Groups",
                filter,
                |endpoint, body| group_and_presence(endpoint, body).map(|(_, listed)| listed),
                |(g, _): &(WorkspaceGroup, bool)| &g.id,
            )
            .await?;
        let mut groups = Vec::with_capacity(found.len());
        for (mut group, sent_members) in found {
            if !same_ci(group.display_name.trim(), display_name.trim()) {
                continue;
            }
            if !sent_members && !self.members_by_filter() {
                match self.group_with_members(&group.id).await? {
                    GroupRead::Found { group: read, .. } => group.members = read.members,
                    // Gone since the filter answered: no one holds its role.
                    GroupRead::Gone => continue,
                }
            }
            groups.push(group);
        }
        Ok(groups)
    }

    /// Whether managed groups' members are read by a filter per account
    /// ([`GroupMembers::ByMemberFilter`]): a group as read ([`ScimClient::get_group`],
    /// [`ScimClient::groups_by_id`]) then says nothing about its members; ask
    /// [`ScimClient::groups_of_member`].
    pub fn members_by_filter(&self) -> bool {
        self.inner.group_members == GroupMembers::ByMemberFilter
    }

    /// The listed groups, each managed one with the members that the per-account
    /// filters found (see [`GroupMembers::ByMemberFilter`]); what the listing showed
    /// for a managed group is not used, unmanaged groups keep it. Every account's
    /// answer is needed: one that fails fails the read, since a member left out
    /// would look absent (an add planned for what is there; in verification, a
    /// removal taken as done that was not).
    async fn members_by_member_filter(
        &self,
        accounts: &[Account],
        listed: Vec<(WorkspaceGroup, bool)>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Vec<WorkspaceGroup>, WorkspaceError> {
        let mut groups: Vec<WorkspaceGroup> = Vec::with_capacity(listed.len());
        let mut managed: HashMap<String, usize> = HashMap::new();
        for (mut group, _) in listed {
            if self.reads_members_of(&group.display_name) {
                group.members.clear();
                managed.insert(group.id.clone(), groups.len());
            }
            groups.push(group);
        }
        if managed.is_empty() {
            return Ok(groups);
        }
        self.confirm_member_filter().await?;
        let total = accounts.len() as u64;
        // In account order (`buffered`), so the members come in a stable order; at
        // most `max_concurrency` accounts at a time, and each request still takes
        // a permit and waits for the rate limiter in `send`. Owned ids and a client
        // clone per future: futures borrowing from the listing made the snapshot's
        // future fail `Send` ("not general enough").
        let ids: Vec<String> = accounts.iter().map(|a| a.id.clone()).collect();
        let mut probes = futures::stream::iter(ids.into_iter().map(|id| {
            let client = self.clone();
            async move { client.groups_of_member(&id).await.map(|found| (id, found)) }
        }))
        .buffered(self.inner.max_concurrency);
        let mut asked = 0;
        while let Some(answer) = probes.next().await {
            let (account, found) = answer?;
            for group_id in found {
                if let Some(&index) = managed.get(&group_id)
                    && let Some(group) = groups.get_mut(index)
                {
                    group.members.push(account.clone());
                }
            }
            asked += 1;
            progress(Progress {
                what: "memberships",
                pages: asked,
                objects: asked,
                total: Some(total),
            });
        }
        Ok(groups)
    }

    /// Asks the groups of a member that cannot exist. A provider that ignores
    /// `members.value eq` answers with groups, and with members hidden nothing in
    /// its answers would show it: every account would read as a member of every
    /// group (adds never planned, removals planned for everyone not wanted). AWS
    /// answers 404 for a member that does not exist; no groups at all is right too.
    async fn confirm_member_filter(&self) -> Result<(), WorkspaceError> {
        let filter = format!(
            "members.value eq {}",
            parse::filter_string("seatwarden-probe-no-such-member")
        );
        match self
            .first_page::<Value>("/Groups", Some(filter.clone()), 1)
            .await
        {
            Ok((endpoint, page)) if !page.resources.is_empty() => Err(WorkspaceError::malformed(
                &endpoint,
                "groups answered for a member that does not exist: the provider ignores the \
                 members.value filter, so workspace.group_members = \"by_member_filter\" \
                 cannot read memberships here",
            )),
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The ids of the groups account `account_id` is a member of, by `GET
    /// /Groups?filter=members.value eq "<id>"` (the filter AWS IAM Identity Center
    /// documents for this; its group reads never show members), every page of the
    /// answer followed as listings are. AWS answers 404 when the filter names a
    /// member that does not exist: that counts as "in no group" only when a read
    /// of the account and a search on `/Users` ([`ScimClient::find_account_elsewhere`])
    /// confirm it is gone (deleted since it was listed), and only for that
    /// account; a 404 for an account found either way fails, as does a listing that ends
    /// short of its `totalResults`. A returned group that shows members without
    /// this account means the provider ignored the filter: an error too.
    pub async fn groups_of_member(&self, account_id: &str) -> Result<Vec<String>, WorkspaceError> {
        let filter = format!("members.value eq {}", parse::filter_string(account_id));
        let listed = paging::list_filtered(
            self,
            "/Groups",
            Some(&filter),
            "groups",
            &|_| {},
            |endpoint, body: parse::GroupBody| {
                let group = parse::group(endpoint, body)?;
                if !group.members.is_empty() && !group.members.iter().any(|m| m == account_id) {
                    return Err(WorkspaceError::malformed(
                        endpoint,
                        format!(
                            "group {:?} is in the answer and shows its members, but not \
                             {account_id:?}: the provider did not apply the filter",
                            group.id
                        ),
                    ));
                }
                Ok((group.id.clone(), group.id))
            },
        )
        .await;
        match listed {
            Ok(listing) if listing.whole => Ok(listing.items),
            Ok(_) => Err(WorkspaceError::malformed(
                &endpoint_name(&Method::GET, "/Groups", &[("filter", filter)]),
                "the groups of one account ended short of the totalResults announced: \
                 memberships cannot be read whole",
            )),
            // Gone only when a search on /Users does not find it either, as for a
            // deprovision (a route that answers 404 for objects that exist).
            // Unfilled: the roles of these reads do not matter here, and filling
            // them could ask this very filter again.
            Err(e) if e.is_not_found() => match self.read_account(account_id).await? {
                Some(_) => Err(e),
                None => match self.find_elsewhere_unfilled(account_id, None).await? {
                    Some(_) => Err(e),
                    None => {
                        tracing::debug!(
                            account = account_id,
                            "the groups filter, a read and a search say the account is gone: in no group"
                        );
                        Ok(Vec::new())
                    }
                },
            },
            Err(e) => Err(e),
        }
    }

    /// The groups of a listing, each managed one that came without a `members`
    /// attribute read again on its own. Taken as empty, a group whose provider
    /// leaves `members` out of listings would get its members added on every run,
    /// an add would never be verified, and a member no mapping grants any more
    /// would never be removed.
    async fn read_members_left_out(
        &self,
        listed: Vec<(WorkspaceGroup, bool)>,
    ) -> Result<Vec<WorkspaceGroup>, WorkspaceError> {
        Ok(self.read_members_left_out_noting(listed).await?.0)
    }

    /// [`ScimClient::read_members_left_out`], and the ids of the groups it read
    /// on their own.
    async fn read_members_left_out_noting(
        &self,
        listed: Vec<(WorkspaceGroup, bool)>,
    ) -> Result<(Vec<WorkspaceGroup>, HashSet<String>), WorkspaceError> {
        let mut groups = Vec::with_capacity(listed.len());
        let mut read_on_their_own = HashSet::new();
        // Read again, such a group would still show no members.
        let by_filter = self.members_by_filter();
        for (mut group, sent_members) in listed {
            if !by_filter && !sent_members && self.reads_members_of(&group.display_name) {
                read_on_their_own.insert(group.id.clone());
                // Gone since the listing: what the listing showed is all there is.
                // Asked for with `attributes=members` too when the plain read lacks
                // them: a provider returning them only on request would otherwise
                // show every managed group empty.
                if let GroupRead::Found { group: read, .. } =
                    self.group_with_members(&group.id).await?
                {
                    if read.members.is_empty() {
                        // Empty, or a provider that never shows members (AWS IAM
                        // Identity Center): nothing here tells them apart.
                        tracing::debug!(
                            group = %group.display_name,
                            "a managed group shows no members, listed or read on its own"
                        );
                    }
                    group.members = read.members;
                }
            }
            groups.push(group);
        }
        Ok((groups, read_on_their_own))
    }

    /// Every Group's `displayName`, all pages, each asked with
    /// `attributes=displayName` so that no Group's `members` come along: for
    /// `check-config --connect` to name the groups of a SCIM directory that only
    /// look like configured ones. With whether the listing was whole: one that
    /// ended short of its `totalResults` gives what it read, and the check says
    /// the others were not looked at.
    ///
    /// A provider that refuses `attributes` (a 400, such as `invalidValue` or
    /// `invalidSyntax` for a parameter it does not take, or a 501) is asked once
    /// more without it: the names come with the members, a longer read but the
    /// same names; that second answer decides. `progress` is told after each
    /// page, as a run's listings tell it: a large directory's groups take a
    /// while to list, and the check must not look hung.
    pub async fn group_names(
        &self,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<(Vec<String>, bool), WorkspaceError> {
        let names_only = paging::Narrowing {
            filter: None,
            attributes: Some("displayName"),
        };
        let listed = match self.list_group_names(names_only, progress).await {
            Err(
                e @ WorkspaceError::Status {
                    status: 400 | 501, ..
                },
            ) => {
                tracing::info!(
                    error = %e,
                    "the Groups listing with attributes=displayName was refused; listing \
                     the Groups without it"
                );
                self.list_group_names(paging::Narrowing::default(), progress)
                    .await?
            }
            listed => listed?,
        };
        Ok((listed.items, listed.whole))
    }

    /// Every User, read as [`Self::people`] reads them (`GET /Users`, all
    /// pages, no `attributes`: a provider may return `active` only when not
    /// narrowed, or only when asked, and the check must see what a run sees),
    /// for `check-config --connect` to refuse what a run would refuse: the
    /// Users, the ids of those sent without `active`, and whether the listing
    /// reached its `totalResults`. `progress` is told after each page: 100,000
    /// Users take minutes to read.
    pub async fn users_and_active(
        &self,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<(Vec<(Account, Option<String>)>, Vec<String>, bool), WorkspaceError> {
        let listed = paging::list_all(
            self,
            "/Users",
            "people",
            progress,
            |endpoint, user: parse::PersonBody| {
                let account = parse::account(endpoint, &user.0, &RoleAttribute::None)?;
                Ok((account.id.clone(), (account, parse::sends_active(&user.0))))
            },
        )
        .await?;
        let mut without_active = Vec::new();
        let users = listed
            .items
            .into_iter()
            .map(|(account, sent_active)| {
                if !sent_active {
                    without_active.push(account.id.clone());
                }
                (account, None)
            })
            .collect();
        Ok((users, without_active, listed.whole))
    }

    async fn list_group_names(
        &self,
        narrowing: paging::Narrowing<'_>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<paging::Listing<String>, WorkspaceError> {
        paging::list_narrowed(
            self,
            "/Groups",
            narrowing,
            "groups",
            progress,
            |endpoint, body: parse::GroupBody| {
                let group = parse::group(endpoint, body)?;
                Ok((group.id, group.display_name))
            },
        )
        .await
    }

    /// All Users, each with its enterprise `department`, and all Groups: what a
    /// SCIM service provider used as the directory is read for. Roles are not read.
    pub async fn people(
        &self,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<People, WorkspaceError> {
        let users = paging::list_all(
            self,
            "/Users",
            "people",
            progress,
            |endpoint, user: parse::PersonBody| {
                let account = parse::account(endpoint, &user.0, &RoleAttribute::None)?;
                let department = parse::department(&user.0);
                let group_ids = parse::group_ids(&user.0);
                let sent_active = parse::sends_active(&user.0);
                Ok((
                    account.id.clone(),
                    (account, department, group_ids, sent_active),
                ))
            },
        );
        let groups = paging::list_all(
            self,
            "/Groups",
            "groups",
            progress,
            |endpoint, body: parse::GroupBody| {
                let sent_members = body.sends_members();
                let marked = marks(&body);
                let group = parse::group(endpoint, body)?;
                Ok((group.id.clone(), (group, sent_members, marked)))
            },
        );
        let (users, groups) = futures::try_join!(users, groups)?;
        let users_whole = users.whole;
        let groups_whole = groups.whole;
        let mut named_by_users: HashMap<String, Vec<String>> = HashMap::new();
        let mut without_active = Vec::new();
        let users = users
            .items
            .into_iter()
            .map(|(account, department, group_ids, sent_active)| {
                for group in group_ids {
                    named_by_users
                        .entry(group)
                        .or_default()
                        .push(account.id.clone());
                }
                if !sent_active {
                    without_active.push(account.id.clone());
                }
                (account, department)
            })
            .collect();
        let mut listed_without_members = HashSet::new();
        let mut marked_groups = HashSet::new();
        let mut marked_users = HashSet::new();
        let groups = groups
            .items
            .into_iter()
            .map(|(group, sent_members, (groups, users))| {
                if !sent_members {
                    listed_without_members.insert(group.id.clone());
                }
                marked_groups.extend(groups);
                marked_users.extend(users);
                group
            })
            .collect();
        Ok(People {
            whole: users_whole && groups_whole,
            users,
            groups,
            named_by_users,
            listed_without_members,
            marked_groups,
            marked_users,
            without_active,
        })
    }

    /// Whether objects may be read many at a time by `id eq … or …` filters (and,
    /// in recovery, accounts by `userName eq … or …`): true until
    /// [`ScimClient::refuse_id_filters`] says the provider cannot.
    pub fn id_filters_usable(&self) -> bool {
        !self.inner.id_filters_refused.load(Ordering::Relaxed)
    }

    /// Reads objects one by one for the rest of this client's life: the provider
    /// refused an `id eq … or …` filter (`or` is optional in RFC 7644, and AWS IAM
    /// Identity Center has only `eq` and `and`) or answered one wrongly.
    pub fn refuse_id_filters(&self, why: &str) {
        if !self.inner.id_filters_refused.swap(true, Ordering::Relaxed) {
            tracing::info!(why, "reading objects one by one: no `id eq … or …` filters");
        }
    }

    /// Splits `ids` into the groups [`ScimClient::accounts_by_id`] and
    /// [`ScimClient::groups_by_id`] read with one request each: at most `most` ids
    /// and a page, and a filter of at most `ID_FILTER_BYTES` percent-encoded.
    pub fn id_batches(&self, ids: Vec<String>, most: usize) -> Vec<Vec<String>> {
        self.filter_batches(ids, most, id_clause)
    }

    /// [`ScimClient::id_batches`] for [`ScimClient::accounts_by_user_name`].
    pub fn user_name_batches(&self, user_names: Vec<String>) -> Vec<Vec<String>> {
        self.filter_batches(user_names, usize::MAX, user_name_clause)
    }

    fn filter_batches(
        &self,
        values: Vec<String>,
        most: usize,
        clause_of: fn(&str) -> String,
    ) -> Vec<Vec<String>> {
        let most = most.min(self.effective_page_size() as usize).max(1);
        let separator = encode_component(" or ").len();
        let mut batches: Vec<Vec<String>> = Vec::new();
        let mut bytes = 0;
        for id in values {
            let clause = encode_component(&clause_of(&id)).len();
            match batches.last_mut() {
                Some(batch)
                    if batch.len() < most && bytes + separator + clause <= ID_FILTER_BYTES =>
                {
                    bytes += separator + clause;
                    batch.push(id);
                }
                _ => {
                    bytes = clause;
                    batches.push(vec![id]);
                }
            }
        }
        batches
    }

    /// The accounts among `ids` that one `id eq … or id eq …` request finds. An id
    /// missing from the answer is not proof of absence (a provider may mishandle
    /// `or`): read it with [`ScimClient::get_account`]. An answer holding an
    /// account that was not asked for (the filter ignored) is an error.
    pub async fn accounts_by_id(&self, ids: &[String]) -> Result<Vec<Account>, WorkspaceError> {
        let role_attribute = &self.inner.role_attribute;
        let mut accounts = self
            .by_id(
                "/Users",
                ids,
                |endpoint, user: parse::UserBody| parse::account(endpoint, &user.0, role_attribute),
                |a: &Account| &a.id,
            )
            .await?;
        self.fill_roles(&mut accounts).await?;
        Ok(accounts)
    }

    /// [`ScimClient::accounts_by_id`] for groups, members included.
    pub async fn groups_by_id(
        &self,
        ids: &[String],
    ) -> Result<Vec<WorkspaceGroup>, WorkspaceError> {
        let groups = self
            .by_id(
                "/Groups",
                ids,
                |endpoint, body| group_and_presence(endpoint, body).map(|(_, listed)| listed),
                |(g, _): &(WorkspaceGroup, bool)| &g.id,
            )
            .await?;
        self.read_members_left_out(groups).await
    }

    /// The accounts one `userName eq … or userName eq …` request finds for
    /// `user_names`: each name with the first account of the answer whose userName
    /// is the same but for case, the one [`ScimClient::find_account_by_user_name`]
    /// picks from an answer for that name alone. A name missing from the answer is
    /// not proof of absence (a provider may mishandle `or`): look it up on its own.
    /// Accounts that match no name are passed over, as that lookup passes over
    /// them: a provider that applies `userName eq` loosely still answers the names
    /// it did match.
    pub async fn accounts_by_user_name(
        &self,
        user_names: &[String],
    ) -> Result<Vec<(String, Account)>, WorkspaceError> {
        let (holders, _) = self.user_name_holders(user_names).await?;
        Ok(holders
            .into_iter()
            .filter_map(|(name, holders)| Some((name, holders.into_iter().next()?)))
            .collect())
    }

    /// [`ScimClient::accounts_by_user_name`] with every account of the answer
    /// that holds each name, in the answer's order, as
    /// [`ScimClient::find_accounts_by_user_name`] finds them for that name alone.
    /// `None` when the answer is one page of more: a name held by several
    /// accounts makes more holders than names, and a holder on a page not read
    /// (the account a create made, say) would be missing from its name's list
    /// with nothing to tell; each name is then to be looked up on its own.
    pub async fn holders_by_user_name(
        &self,
        user_names: &[String],
    ) -> Result<Option<Vec<(String, Vec<Account>)>>, WorkspaceError> {
        let (named, whole) = self.user_name_holders(user_names).await?;
        Ok(whole.then_some(named))
    }

    /// The holders of each of `user_names` one request finds, and whether its
    /// answer was whole (not one page of more).
    async fn user_name_holders(
        &self,
        user_names: &[String],
    ) -> Result<(Vec<(String, Vec<Account>)>, bool), WorkspaceError> {
        if user_names.is_empty() {
            return Ok((Vec::new(), true));
        }
        let filter = user_names
            .iter()
            .map(|u| user_name_clause(u))
            .collect::<Vec<_>>()
            .join(" or ");
        let count = self.effective_page_size();
        let (endpoint, page) = self
            .first_page::<parse::UserBody>("/Users", Some(filter), count)
            .await?;
        let listed = page.resources.len();
        let whole = match page.total_results {
            Some(total) => total <= listed as u64,
            None => listed < count as usize,
        } && page.next_cursor.as_deref().is_none_or(str::is_empty);
        let mut seen = HashSet::new();
        let mut found = Vec::with_capacity(listed);
        for user in page.resources {
            let account = parse::account(&endpoint, &user.0, &self.inner.role_attribute)?;
            if seen.insert(account.id.clone()) {
                found.push(account);
            }
        }
        let mut named: Vec<(String, Vec<Account>)> = user_names
            .iter()
            .map(|name| {
                let holders: Vec<Account> = found
                    .iter()
                    .filter(|a| same_name(&a.user_name, name))
                    .cloned()
                    .collect();
                (name.clone(), holders)
            })
            .filter(|(_, holders)| !holders.is_empty())
            .collect();
        // One fill for the whole answer, as for one account per name.
        let mut all: Vec<Account> = named.iter().flat_map(|(_, h)| h.iter().cloned()).collect();
        self.fill_roles(&mut all).await?;
        let mut filled = all.into_iter();
        for holder in named.iter_mut().flat_map(|(_, h)| h.iter_mut()) {
            if let Some(account) = filled.next() {
                *holder = account;
            }
        }
        Ok((named, whole))
    }

    async fn by_id<R: DeserializeOwned, T>(
        &self,
        path: &str,
        ids: &[String],
        parse_one: impl Fn(&str, R) -> Result<T, WorkspaceError>,
        id_of: impl Fn(&T) -> &str,
    ) -> Result<Vec<T>, WorkspaceError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let asked: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let filter = ids
            .iter()
            .map(|id| id_clause(id))
            .collect::<Vec<_>>()
            .join(" or ");
        let parse_asked = |endpoint: &str, item: R| {
            let parsed = parse_one(endpoint, item)?;
            if !asked.contains(id_of(&parsed)) {
                return Err(WorkspaceError::malformed(
                    endpoint,
                    format!(
                        "the answer holds {:?}, which the filter did not ask for",
                        id_of(&parsed)
                    ),
                ));
            }
            Ok(parsed)
        };
        self.find(path, filter, parse_asked, &id_of).await
    }

    /// Reads one account's worth of a `/Users` listing: proof that the base URL and
    /// the token reach a SCIM `/Users` endpoint, before a 404 for an account is
    /// taken to mean that the account is gone.
    pub async fn confirm_users_endpoint(&self) -> Result<(), WorkspaceError> {
        self.count_users().await.map(|_| ())
    }

    /// [`ScimClient::confirm_users_endpoint`], and the `totalResults` its page
    /// announced: how many accounts a listing of `/Users` would read, if the
    /// provider says.
    pub async fn count_users(&self) -> Result<Option<u64>, WorkspaceError> {
        let (_, page) = self.first_page::<Value>("/Users", None, 1).await?;
        Ok(page.total_results)
    }

    /// `check-config --connect`: discovery (`/ServiceProviderConfig`, whose
    /// absence is tolerated as a run tolerates it, and said with why) and the
    /// first page of `/Users` and of `/Groups`, one object each, with the token,
    /// each object read as a run reads it (a User without id fails here as it
    /// fails the run): what a run's reads would meet first, read only. What it
    /// proved, one item a request.
    pub async fn probe(&self) -> Result<Vec<String>, WorkspaceError> {
        Ok(self.probe_reading().await?.0)
    }

    /// [`ScimClient::probe`], and the accounts of the first page of `/Users` as
    /// read: a SCIM directory checks them further as its run does.
    pub async fn probe_reading(&self) -> Result<(Vec<String>, Vec<Account>), WorkspaceError> {
        let tolerated = self.discover_tolerating().await?;
        let mut proven = vec![match tolerated {
            Some(e) => format!("no usable ServiceProviderConfig, defaults apply ({e})"),
            None => self.discovered_summary(),
        }];
        let counted = |path: &str, total: Option<u64>, what: &str| match total {
            Some(total) => format!("GET {path} ({total} {what})"),
            None => format!("GET {path}"),
        };
        let (endpoint, users) = self
            .first_page::<parse::UserBody>("/Users", None, 1)
            .await?;
        let accounts = users
            .resources
            .iter()
            .map(|user| parse::account(&endpoint, &user.0, &self.inner.role_attribute))
            .collect::<Result<Vec<_>, _>>()?;
        proven.push(counted("/Users", users.total_results, "accounts"));
        let (endpoint, groups) = self
            .first_page::<parse::GroupBody>("/Groups", None, 1)
            .await?;
        for group in groups.resources {
            parse::group(&endpoint, group)?;
        }
        proven.push(counted("/Groups", groups.total_results, "groups"));
        Ok((proven, accounts))
    }

    /// What discovery learnt, in a few words: PATCH, filter, ETags, paging.
    fn discovered_summary(&self) -> String {
        let d = *self
            .inner
            .discovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let said = |flag: Option<bool>| match flag {
            Some(true) => "yes",
            Some(false) => "no",
            None => "not said",
        };
        let filter = match d.max_results {
            Some(max) => format!("maxResults {max}"),
            None => "maxResults not said".to_owned(),
        };
        let paging = match (d.index_paging, d.cursor_paging) {
            (None, None) => "paging not said (by index)".to_owned(),
            (index, cursor) => format!("paging index {}, cursor {}", said(index), said(cursor)),
        };
        format!(
            "ServiceProviderConfig: PATCH {}, filter {filter}, ETags {}, {paging}",
            said(d.patch_supported),
            said(d.etag_supported),
        )
    }

    pub async fn get_account(&self, id: &str) -> Result<Option<Account>, WorkspaceError> {
        let found = self.read_account(id).await?;
        self.filled(found).await
    }

    /// [`ScimClient::get_account`] without the roles filled from role groups.
    async fn read_account(&self, id: &str) -> Result<Option<Account>, WorkspaceError> {
        let path = resource_path(&Method::GET, "/Users", id)?;
        match self.get_json::<parse::UserBody>(&path, &[]).await {
            Ok((endpoint, user)) => {
                parse::account(&endpoint, &user.0, &self.inner.role_attribute).map(Some)
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Account `id`, which `/Users/{id}` answered 404 for, looked for another way
    /// before it counts as gone: by an `id eq` filter on `/Users`; where the
    /// provider refuses that, by a `userName eq` filter for `user_name`; where it
    /// refuses that too, the older proof stands, that a `/Users` listing page
    /// answers (a wrong base URL answers 404 to everything). A route that answers
    /// 404 for accounts that exist (a proxy that will not pass an id, a gateway
    /// that routes only some paths) must not report a leaver deprovisioned.
    pub async fn find_account_elsewhere(
        &self,
        id: &str,
        user_name: Option<&str>,
    ) -> Result<Option<Account>, WorkspaceError> {
        let found = self.find_elsewhere_unfilled(id, user_name).await?;
        self.filled(found).await
    }

    /// [`ScimClient::find_account_elsewhere`] without the roles filled from role
    /// groups.
    async fn find_elsewhere_unfilled(
        &self,
        id: &str,
        user_name: Option<&str>,
    ) -> Result<Option<Account>, WorkspaceError> {
        let refused = |e: &WorkspaceError| matches!(e.status(), Some(400 | 501));
        if !self.inner.id_filters_refused.load(Ordering::Relaxed) {
            match self.find_users(id_clause(id)).await {
                Ok(found) => return Ok(pick(found, |a: &Account| a.id == id)),
                Err(e) if refused(&e) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(user_name) = user_name.filter(|u| !u.trim().is_empty()) {
            match self.find_by_user_name_unfilled(user_name).await {
                Ok(found) => return Ok(found.filter(|a| a.id == id)),
                Err(e) if refused(&e) => {}
                Err(e) => return Err(e),
            }
        }
        self.confirm_users_endpoint().await.map(|()| None)
    }

    /// `filter=userName eq "…"`; userName is not case-exact, so among several
    /// results the exact (case-insensitive) match wins, white space at an end
    /// aside as matching compares userNames ([`same_name`]).
    pub async fn find_account_by_user_name(
        &self,
        user_name: &str,
    ) -> Result<Option<Account>, WorkspaceError> {
        let found = self.find_by_user_name_unfilled(user_name).await?;
        self.filled(found).await
    }

    /// Every account `userName eq` finds whose userName is `user_name` as
    /// [`ScimClient::find_account_by_user_name`] compares it, in the answer's
    /// order. A workspace that keeps userNames unique only case-sensitively, or
    /// not at all, can hold several (`Ada@x.com` beside `ada@x.com`); where it
    /// matters whose account is taken (a create's userName found taken), the
    /// first of them is anyone's.
    pub async fn find_accounts_by_user_name(
        &self,
        user_name: &str,
    ) -> Result<Vec<Account>, WorkspaceError> {
        let mut found: Vec<Account> = self
            .find_users(user_name_clause(user_name))
            .await?
            .into_iter()
            .filter(|a| same_name(&a.user_name, user_name))
            .collect();
        self.fill_roles(&mut found).await?;
        Ok(found)
    }

    /// [`ScimClient::find_account_by_user_name`] without the roles filled from
    /// role groups.
    async fn find_by_user_name_unfilled(
        &self,
        user_name: &str,
    ) -> Result<Option<Account>, WorkspaceError> {
        let found = self.find_users(user_name_clause(user_name)).await?;
        Ok(pick(found, |a: &Account| {
            same_name(&a.user_name, user_name)
        }))
    }

    /// The accounts `filter` finds on `/Users`, roles not filled.
    async fn find_users(&self, filter: String) -> Result<Vec<Account>, WorkspaceError> {
        self.find(
            "/Users",
            filter,
            |endpoint, user: parse::UserBody| {
                parse::account(endpoint, &user.0, &self.inner.role_attribute)
            },
            |a: &Account| &a.id,
        )
        .await
    }

    /// `POST /Users`. Under [`RoleAttribute::Groups`] the role is not in the
    /// POST: the role group is looked up first (a missing one fails the create
    /// before anything is written, as [`ScimClient::set_role`] would fail), and
    /// the new account is added to it after. A run cut off between the two, or
    /// an add that fails, leaves an account with no role: verification does not
    /// call such a create done, and the next plan sees the role drift and sets it.
    pub async fn create_account(&self, spec: &AccountSpec) -> Result<Account, WorkspaceError> {
        let role_group = match spec.role {
            Some(role) if self.roles_by_group() => {
                Some((role, self.target_role_group(role).await?))
            }
            _ => None,
        };
        let mut account = self.post_account(spec).await?;
        if let Some((role, group)) = role_group {
            match self
                .add_members(&group.id, std::slice::from_ref(&account.id))
                .await
            {
                Ok(()) => account.roles = vec![role.as_str().to_owned()],
                // The account exists: an error here would lose its link, and
                // verification reports the missing role (the next run sets it).
                Err(e) => tracing::warn!(
                    account = %account.id,
                    user_name = %spec.user_name,
                    role = %role,
                    error = %e,
                    "the account was created, but not added to its role group"
                ),
            }
        }
        Ok(account)
    }

    /// The POST of [`ScimClient::create_account`]. Before a retry the account is
    /// looked up by userName ([`ScimClient::post_unless_made`]): a provider that
    /// does not enforce userName uniqueness made a second account of a POST sent
    /// again after one whose answer was lost. What the lookup finds is taken as
    /// this create's only when its `externalId` names the person
    /// ([`lost_answer_account`]).
    async fn post_account(&self, spec: &AccountSpec) -> Result<Account, WorkspaceError> {
        let mut schemas = vec![Value::from(SCHEMA_USER)];
        let mut body = json!({
            "userName": spec.user_name,
            "externalId": spec.external_id,
            "active": true,
        });
        let mut name = serde_json::Map::new();
        if let Some(given) = &spec.given_name {
            name.insert("givenName".into(), given.clone().into());
        }
        if let Some(family) = &spec.family_name {
            name.insert("familyName".into(), family.clone().into());
        }
        if !name.is_empty() {
            body["name"] = Value::Object(name);
        }
        if let Some(display) = &spec.display_name {
            body["displayName"] = display.clone().into();
        }
        if let Some(email) = &spec.email {
            body["emails"] = email_value(email);
        }
        if let Some(role) = spec.role {
            match &self.inner.role_attribute {
                RoleAttribute::None | RoleAttribute::Groups { .. } => {}
                RoleAttribute::Roles => body["roles"] = roles_value(role),
                RoleAttribute::Extension { schema, attribute } => {
                    schemas.push(schema.clone().into());
                    body[schema.as_str()] = json!({ attribute.as_str(): role.as_str() });
                }
            }
        }
        body["schemas"] = Value::Array(schemas);
        let endpoint = endpoint_name(&Method::POST, "/Users", &[]);
        let answer = match self
            .post_unless_made("/Users", &body, || {
                self.find_by_user_name_unfilled(&spec.user_name)
            })
            .await?
        {
            Posted::Answered(answer) => answer,
            Posted::Found(account) => return lost_answer_account(&endpoint, spec, account),
        };
        let unusable = if answer.body.trim().is_empty() {
            "without a body".to_owned()
        } else {
            let user: parse::UserBody = self.json_answer(&endpoint, &answer.body)?;
            match parse::account(&endpoint, &user.0, &self.inner.role_attribute) {
                Ok(account) => return Ok(account),
                // A stub (`{"id": …}`) rather than the User: the 2xx says the
                // account was made, and failing the create would count it as not.
                Err(WorkspaceError::Malformed { what, .. }) => format!("with {what}"),
                Err(e) => return Err(e),
            }
        };
        // A 2xx without the resource: read it back. Of several accounts holding
        // the userName (a workspace unique only case-sensitively), the one naming
        // the person is the one this create made.
        let holders: Vec<Account> = self
            .find_users(user_name_clause(&spec.user_name))
            .await?
            .into_iter()
            .filter(|a| same_name(&a.user_name, &spec.user_name))
            .collect();
        let made = holders
            .iter()
            .position(|a| a.external_id.as_deref() == Some(spec.external_id.as_str()))
            .unwrap_or(0);
        holders.into_iter().nth(made).ok_or_else(|| {
            WorkspaceError::malformed(
                &endpoint,
                format!(
                    "HTTP {} {unusable}, and userName {:?} is not found afterwards",
                    answer.status, spec.user_name
                ),
            )
        })
    }

    /// One PATCH for all `changes`. `emails` is multi-valued and a PATCH replaces
    /// it whole: a new email is written into the entry seatwarden reads (primary,
    /// else work, else first) of the account as read just before, so a home or
    /// second work address the workspace keeps is not lost. That read and write
    /// carry the read's version in `If-Match` where the provider supports ETags
    /// ([`ScimClient::read_modify_write`]), so an address added in between is not
    /// overwritten. Without PATCH, the same change goes by PUT.
    pub async fn update_attributes(
        &self,
        id: &str,
        changes: &[AttributeChange],
    ) -> Result<(), WorkspaceError> {
        if changes.is_empty() {
            return Ok(());
        }
        let operations = |user: &Value| -> Vec<Value> {
            let emails_now = parse::emails(user).map(Vec::as_slice);
            changes
                .iter()
                .map(|c| attribute_op(c, emails_now))
                .collect()
        };
        if !self.writes_by_put() {
            let path = resource_path(&Method::PATCH, "/Users", id)?;
            let sets_email = changes
                .iter()
                .any(|c| c.attribute == Attribute::Email && c.to.is_some());
            let patched = if sets_email {
                self.read_modify_write(&path, Method::PATCH, &[], |_, user| {
                    Ok(patch_body(operations(&user)))
                })
                .await
            } else {
                self.patch(&path, operations(&Value::Null)).await
            };
            if !self.patch_refused(&patched).await {
                return patched;
            }
        }
        let path = resource_path(&Method::PUT, "/Users", id)?;
        self.put_replaced(&path, |endpoint, user| {
            let ops = operations(&user);
            replaced_user(endpoint, user, &ops)
        })
        .await
    }

    /// Writes the role per the configured attribute; `RoleAttribute::None` sends nothing.
    pub async fn set_role(&self, id: &str, role: Role) -> Result<(), WorkspaceError> {
        let op = match &self.inner.role_attribute {
            RoleAttribute::None => return Ok(()),
            RoleAttribute::Groups { .. } => return self.set_role_by_group(id, role).await,
            RoleAttribute::Roles => {
                json!({"op": "replace", "path": "roles", "value": roles_value(role)})
            }
            RoleAttribute::Extension { schema, attribute } => json!({
                "op": "replace",
                "path": format!("{schema}:{attribute}"),
                "value": role.as_str(),
            }),
        };
        self.patch_user(id, op).await
    }

    /// Under [`RoleAttribute::Groups`]: account `id` added to `role`'s group, then
    /// removed from every other role group that lists it. Added first: between
    /// the two writes the account holds two roles, never none, since a provider
    /// gives an account in no permission group some default of its own (or none
    /// at all). Each write is skipped when the groups as read already show it.
    pub async fn set_role_by_group(&self, id: &str, role: Role) -> Result<(), WorkspaceError> {
        let groups = self.role_groups_now(&[id.to_owned()]).await?;
        let target = self.only_role_group(
            role,
            groups
                .iter()
                .filter(|g| self.role_of_group(&g.display_name) == Some(role))
                .cloned()
                .collect(),
        )?;
        if !target.members.iter().any(|m| m == id) {
            self.add_members(&target.id, &[id.to_owned()]).await?;
        }
        for group in &groups {
            if group.id != target.id && group.members.iter().any(|m| m == id) {
                self.remove_members(&group.id, &[id.to_owned()]).await?;
            }
        }
        Ok(())
    }

    /// The one workspace group of `role`'s role group, read now, matched as
    /// reads match role groups.
    async fn target_role_group(&self, role: Role) -> Result<WorkspaceGroup, WorkspaceError> {
        let found = match self.role_group_name(role) {
            Some(name) => self.role_groups_named(&name).await?,
            None => Vec::new(),
        };
        self.only_role_group(role, found)
    }

    /// `role`'s group as configured, if it has one.
    fn role_group_name(&self, role: Role) -> Option<String> {
        self.inner
            .role_groups
            .iter()
            .find(|g| g.role == role)
            .map(|g| g.name.clone())
    }

    /// The one group in `found` (the groups answering to `role`'s group name), or
    /// an error that is not transient: seatwarden does not make permission groups
    /// (what a new group grants is the workspace's to say), and of several it
    /// cannot tell which grants the role.
    fn only_role_group(
        &self,
        role: Role,
        found: Vec<WorkspaceGroup>,
    ) -> Result<WorkspaceGroup, WorkspaceError> {
        let key = format!("workspace.role_groups.{role}");
        let Some(name) = self.role_group_name(role) else {
            return Err(WorkspaceError::NotSent {
                endpoint: "PATCH /Groups/{id}".to_owned(),
                reason: format!(
                    "role {role} has no group in the configuration ({key}), so it cannot \
                     be given by membership"
                ),
            });
        };
        let endpoint = endpoint_name(
            &Method::GET,
            "/Groups",
            &[(
                "filter",
                format!("displayName eq {}", parse::filter_string(&name)),
            )],
        );
        let mut found = found.into_iter();
        match (found.next(), found.next()) {
            (Some(group), None) => Ok(group),
            (None, _) => Err(WorkspaceError::NotSent {
                endpoint,
                reason: format!(
                    "the workspace has no group {name:?}, which gives role {role} ({key}): \
                     seatwarden does not create permission groups; create it in the \
                     workspace, or correct {key}"
                ),
            }),
            (Some(_), Some(_)) => Err(WorkspaceError::NotSent {
                endpoint,
                reason: format!(
                    "several workspace groups answer to {name:?}, which gives role {role} \
                     ({key}): which one grants the role is for a person to settle; \
                     rename or remove the others"
                ),
            }),
        }
    }

    pub async fn set_active(&self, id: &str, active: bool) -> Result<(), WorkspaceError> {
        let op = json!({"op": "replace", "path": "active", "value": active});
        self.patch_user(id, op).await
    }

    /// One PATCH operation on a User, or, without PATCH, the same change by PUT.
    async fn patch_user(&self, id: &str, op: Value) -> Result<(), WorkspaceError> {
        if !self.writes_by_put() {
            let patched = self
                .patch(
                    &resource_path(&Method::PATCH, "/Users", id)?,
                    vec![op.clone()],
                )
                .await;
            if !self.patch_refused(&patched).await {
                return patched;
            }
        }
        let path = resource_path(&Method::PUT, "/Users", id)?;
        let ops = [op];
        self.put_replaced(&path, |endpoint, user| replaced_user(endpoint, user, &ops))
            .await
    }

    pub async fn delete_account(&self, id: &str) -> Result<(), WorkspaceError> {
        let path = resource_path(&Method::DELETE, "/Users", id)?;
        self.send(Method::DELETE, &path, &[], None).await?;
        Ok(())
    }

    pub async fn get_group(&self, id: &str) -> Result<Option<WorkspaceGroup>, WorkspaceError> {
        let path = resource_path(&Method::GET, "/Groups", id)?;
        match self.get_json(&path, &[]).await {
            Ok((endpoint, body)) => parse::group(&endpoint, body).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /Groups/{id}` for its members: when the answer has no `members`
    /// attribute, asked again with `attributes=members` (RFC 7644 §3.4.2.5; an
    /// attribute the provider's schema returns only "on request", RFC 7643
    /// §7, comes only so). When the provider refuses `attributes` (400, 501),
    /// the group comes as the first read showed it: without members shown.
    pub async fn group_with_members(&self, id: &str) -> Result<GroupRead, WorkspaceError> {
        let path = resource_path(&Method::GET, "/Groups", id)?;
        let (endpoint, body) = match self.get_json::<parse::GroupBody>(&path, &[]).await {
            Ok(read) => read,
            Err(e) if e.is_not_found() => return Ok(GroupRead::Gone),
            Err(e) => return Err(e),
        };
        if body.sends_members() {
            let (marked_groups, marked_users) = marks(&body);
            return Ok(GroupRead::Found {
                group: parse::group(&endpoint, body)?,
                marked_groups,
                marked_users,
                members_shown: true,
                endpoint,
            });
        }
        let group = parse::group(&endpoint, body)?;
        let query = [("attributes", "members".to_owned())];
        match self.get_json::<parse::GroupBody>(&path, &query).await {
            Ok((endpoint, asked)) => {
                let (marked_groups, marked_users) = marks(&asked);
                let members_shown = asked.sends_members();
                let members = match asked {
                    parse::GroupBody::Object {
                        members: Some(members),
                        ..
                    } => members,
                    _ => Vec::new(),
                };
                Ok(GroupRead::Found {
                    group: WorkspaceGroup { members, ..group },
                    marked_groups,
                    marked_users,
                    members_shown,
                    endpoint,
                })
            }
            Err(e) if e.is_not_found() => Ok(GroupRead::Gone),
            Err(
                e @ WorkspaceError::Status {
                    status: 400 | 501, ..
                },
            ) => {
                tracing::info!(
                    error = %e,
                    "a Group read with attributes=members was refused; its members are \
                     taken from the read without it"
                );
                Ok(GroupRead::Found {
                    group,
                    marked_groups: Vec::new(),
                    marked_users: Vec::new(),
                    members_shown: false,
                    endpoint: endpoint_name(&Method::GET, &path, &query),
                })
            }
            Err(e) => Err(e),
        }
    }

    pub async fn find_group_by_name(
        &self,
        display_name: &str,
    ) -> Result<Option<WorkspaceGroup>, WorkspaceError> {
        Ok(self.groups_named(display_name).await?.into_iter().next())
    }

    /// Every group answering to `display_name`, without regard to case as the plan
    /// matches groups.
    async fn groups_named(
        &self,
        display_name: &str,
    ) -> Result<Vec<WorkspaceGroup>, WorkspaceError> {
        let filter = format!("displayName eq {}", parse::filter_string(display_name));
        let mut found = self
            .find("/Groups", filter, parse::group, |g: &WorkspaceGroup| &g.id)
            .await?;
        found.retain(|g| same_ci(&g.display_name, display_name));
        Ok(found)
    }

    /// `POST /Groups`. Retried like any request, but before each retry the group
    /// is looked up by name: a timeout or a 5xx may come after the provider created
    /// it, and nothing makes a Group's `displayName` unique (RFC 7643 §4.2), so a
    /// blind second POST would make a duplicate workspace.
    ///
    /// Looked up before the first POST too: a listing by index that a deletion
    /// shifted can skip a group that exists, and the plan then creates it. An
    /// existing group is used; several already answering to the name are refused
    /// (the plan would call that a disputed match, and another would add to it).
    /// The retries are [`ScimClient::post_unless_made`]'s.
    pub async fn create_group(&self, display_name: &str) -> Result<WorkspaceGroup, WorkspaceError> {
        let body = json!({"schemas": [SCHEMA_GROUP], "displayName": display_name});
        let endpoint = endpoint_name(&Method::POST, "/Groups", &[]);
        let existing = match self.groups_named(display_name).await {
            Ok(found) => found,
            // A provider that refuses the filter (400 invalidFilter, 501, 403)
            // cannot be asked: posted as before, which is no worse than without
            // the lookup. A transient failure is tried again by the next run.
            Err(e) if !e.is_transient() => {
                tracing::warn!(
                    group = display_name,
                    error = %e,
                    "cannot look the group up by name before creating it; creating it"
                );
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        match existing.as_slice() {
            [] => {}
            [existing] => {
                tracing::warn!(
                    group = display_name,
                    id = %existing.id,
                    "the group to create exists (the workspace listing missed it); using it"
                );
                return Ok(existing.clone());
            }
            several => {
                return Err(WorkspaceError::NotSent {
                    endpoint,
                    reason: format!(
                        "{} groups already answer to {display_name:?} ({}), which the \
                         workspace listing did not show; the next run reports them as a \
                         disputed match",
                        several.len(),
                        several
                            .iter()
                            .map(|g| g.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        let answer = match self
            .post_unless_made("/Groups", &body, || self.find_group_by_name(display_name))
            .await?
        {
            Posted::Answered(answer) => answer,
            Posted::Found(group) => {
                tracing::info!(
                    group = display_name,
                    id = %group.id,
                    "the group was created by an attempt whose answer was lost"
                );
                return Ok(group);
            }
        };
        if answer.body.trim().is_empty() {
            // A 201 without the resource: read it back.
            return self
                .find_group_by_name(display_name)
                .await?
                .ok_or_else(|| {
                    WorkspaceError::malformed(
                        &endpoint,
                        format!(
                            "HTTP {} without a body, and group {display_name:?} is not found afterwards",
                            answer.status
                        ),
                    )
                });
        }
        let body = self.json_answer(&endpoint, &answer.body)?;
        parse::group(&endpoint, body)
    }

    /// `POST {collection}` with `body`, retried like any write, except that before
    /// each retry `lookup` is asked whether an attempt whose answer was lost (the
    /// connection dropped after the request left, a timeout, a 5xx the provider
    /// sent after it had made the resource) made it: what it finds is
    /// [`Posted::Found`], and no further POST is sent. A blind second POST makes
    /// a duplicate wherever nothing keeps the name unique: a Group's
    /// `displayName` never is (RFC 7643 §4.2), and a provider may not enforce
    /// (or may compare case-sensitively) the uniqueness of `userName`.
    ///
    /// The lookup is a GET that [`ScimClient::send`] already retries; this loop
    /// retries only the POST, and gives up with the lookup's error when a lookup
    /// still fails: one more POST might make a duplicate, and the next run lists
    /// the workspace before it plans the create again. Retrying the lookup here
    /// as well made a provider answering 503 take a whole round of lookups for
    /// every POST retry.
    ///
    /// The retries counted ([`ClientStats::retries`]) are the POSTs sent again:
    /// a stop that ends the wait before one, or a lookup that finds the
    /// resource, leaves it uncounted.
    async fn post_unless_made<T, Fut>(
        &self,
        collection: &str,
        body: &Value,
        lookup: impl Fn() -> Fut,
    ) -> Result<Posted<T>, WorkspaceError>
    where
        Fut: Future<Output = Result<Option<T>, WorkspaceError>>,
    {
        let endpoint = endpoint_name(&Method::POST, collection, &[]);
        let url = format!("{}{collection}", self.inner.base);
        let bytes = serde_json::to_vec(body)
            .map_err(|e| WorkspaceError::malformed(&endpoint, format!("request body: {e}")))?;
        let tried = std::sync::atomic::AtomicBool::new(false);
        let inner = &self.inner;
        let stop = writes_stop(&Method::POST);
        let mut log = crate::retry::RetryLog::default();
        let answer = crate::retry::retry_unless_stopped(
            inner.retry,
            stop.as_ref(),
            || async {
                if tried.swap(true, Ordering::Relaxed) {
                    if let Some(found) = lookup().await.map_err(CreateFailure::Lookup)? {
                        return Ok(Posted::Found(found));
                    }
                    inner.retries.fetch_add(1, Ordering::Relaxed);
                }
                self.attempt(
                    &Method::POST,
                    &url,
                    &endpoint,
                    Some(bytes.clone()),
                    None,
                    stop.as_ref(),
                )
                .await
                .map(Posted::Answered)
                .map_err(CreateFailure::Post)
            },
            |e, delay| log.retrying(&endpoint, &inner.retry, e.error(), delay),
            |last| CreateFailure::Post(WorkspaceError::stopped(&endpoint, Some(last.error()))),
        )
        .await;
        log.finished(&endpoint, &answer);
        answer.map_err(CreateFailure::into_error)
    }

    /// `add members [{value}]`, at most 100 members per request; without PATCH,
    /// one PUT of the group with its whole new member list.
    pub async fn add_members(
        &self,
        group_id: &str,
        account_ids: &[String],
    ) -> Result<(), WorkspaceError> {
        if !self.writes_by_put() {
            let patched = self.patch_add_members(group_id, account_ids).await;
            if !self.patch_refused(&patched).await {
                return patched;
            }
        }
        self.put_members(group_id, account_ids, &[]).await
    }

    async fn patch_add_members(
        &self,
        group_id: &str,
        account_ids: &[String],
    ) -> Result<(), WorkspaceError> {
        let path = resource_path(&Method::PATCH, "/Groups", group_id)?;
        for chunk in account_ids.chunks(MEMBER_CHUNK) {
            let members: Vec<Value> = chunk.iter().map(|id| json!({"value": id})).collect();
            let op = json!({"op": "add", "path": "members", "value": members});
            match self.patch_group_members(&path, vec![op]).await {
                Err(e) if e.is_conflict() && chunk.len() > 1 => {
                    // PATCH is atomic (RFC 7644 §3.5.2): one member already in
                    // (push SCIM got there first, or a retried attempt whose answer
                    // was lost) fails the whole batch with 409 where a provider
                    // enforces membership uniqueness. Added one by one, the ones
                    // already in are what was wanted; verification reads the group.
                    tracing::debug!(error = %e, "a member add met 409; adding one by one");
                    for id in chunk {
                        let op = json!({"op": "add", "path": "members", "value": [{"value": id}]});
                        match self.patch_group_members(&path, vec![op]).await {
                            Err(e) if e.is_conflict() => {}
                            other => other?,
                        }
                    }
                }
                Err(e) if e.is_conflict() => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// One `remove members[value eq "id"]` operation per id, at most 100 per
    /// request; without PATCH, one PUT of the group without them.
    pub async fn remove_members(
        &self,
        group_id: &str,
        account_ids: &[String],
    ) -> Result<(), WorkspaceError> {
        if !self.writes_by_put() {
            let patched = self.patch_remove_members(group_id, account_ids).await;
            if !self.patch_refused(&patched).await {
                return patched;
            }
        }
        self.put_members(group_id, &[], account_ids).await
    }

    async fn patch_remove_members(
        &self,
        group_id: &str,
        account_ids: &[String],
    ) -> Result<(), WorkspaceError> {
        let path = resource_path(&Method::PATCH, "/Groups", group_id)?;
        for chunk in account_ids.chunks(MEMBER_CHUNK) {
            let ops: Vec<Value> = chunk
                .iter()
                .map(|id| {
                    json!({
                        "op": "remove",
                        "path": format!("members[value eq {}]", parse::filter_string(id)),
                    })
                })
                .collect();
            match self.patch_group_members(&path, ops).await {
                Err(e) if no_target(&e) => {
                    // PATCH is atomic (RFC 7644 §3.5.2): one member already gone
                    // (push SCIM got there first, or an earlier attempt whose
                    // answer was lost) fails the whole batch with `noTarget`.
                    // Removed one by one, the ones already gone are what was
                    // wanted anyway; verification reads the group.
                    for id in chunk {
                        let op = json!({
                            "op": "remove",
                            "path": format!("members[value eq {}]", parse::filter_string(id)),
                        });
                        match self.patch_group_members(&path, vec![op]).await {
                            Err(e) if no_target(&e) => {}
                            other => other?,
                        }
                    }
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// PATCH; success is 200 with the resource or 204 without a body.
    async fn patch(&self, path: &str, operations: Vec<Value>) -> Result<(), WorkspaceError> {
        self.patch_with(path, &[], operations).await
    }

    /// A membership PATCH asks the server to leave `members` out of its answer
    /// (RFC 7644 §3.9 allows `excludedAttributes` on PATCH): otherwise adding a
    /// large group's members 100 at a time returns the whole, growing member list
    /// every time, which made populating a 5,000-member group quadratic. Servers
    /// that ignore the parameter are unaffected.
    async fn patch_group_members(
        &self,
        path: &str,
        operations: Vec<Value>,
    ) -> Result<(), WorkspaceError> {
        let query = [("excludedAttributes", "members".to_owned())];
        self.patch_with(path, &query, operations).await
    }

    async fn patch_with(
        &self,
        path: &str,
        query: &[(&str, String)],
        operations: Vec<Value>,
    ) -> Result<(), WorkspaceError> {
        let body = patch_body(operations);
        let answer = self.send(Method::PATCH, path, query, Some(&body)).await?;
        tracing::trace!(path, status = answer.status, "patched");
        Ok(())
    }

    /// Whether changes go as PUT (RFC 7644 §3.5.1) instead of PATCH: the
    /// provider's `/ServiceProviderConfig` says it does not support PATCH, or a
    /// PATCH was answered 501. An unknown answer keeps PATCH, which every
    /// provider seen so far takes.
    fn writes_by_put(&self) -> bool {
        self.discovered().patch_supported == Some(false)
            || self.inner.patch_refused.load(Ordering::Relaxed)
    }

    /// Whether `patched` is a PATCH refused as not implemented (501, RFC 7644
    /// §3.12): nothing was changed, and the change is to be made by PUT. From
    /// then on every change is. A provider may announce PATCH wrongly, and a
    /// client may not have read `/ServiceProviderConfig` yet: it is read here
    /// once, so that the PUTs know whether to send `If-Match`.
    async fn patch_refused(&self, patched: &Result<(), WorkspaceError>) -> bool {
        let Err(e @ WorkspaceError::Status { status: 501, .. }) = patched else {
            return false;
        };
        if !self.inner.patch_refused.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %e,
                "PATCH is not implemented by the workspace: changes are written by PUT"
            );
            // Only to learn whether ETags are announced: without it the PUTs
            // go without `If-Match`, and the change still gets made.
            if let Err(e) = self.discover().await {
                tracing::warn!(error = %e, "cannot read /ServiceProviderConfig; PUT without If-Match");
            }
        }
        true
    }

    /// Group `group_id` PUT back with `add` among its members and `remove` not,
    /// every other member and attribute as read.
    async fn put_members(
        &self,
        group_id: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<(), WorkspaceError> {
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let path = resource_path(&Method::PUT, "/Groups", group_id)?;
        if self.members_by_filter() {
            // Such a provider answers `"members": []` to every read: the group
            // PUT back with that list would lose every member not named here.
            return Err(WorkspaceError::NotSent {
                endpoint: endpoint_name(&Method::PUT, &path, &[]),
                reason: "the provider does not support PATCH, and its groups never show \
                         their members (workspace.group_members = \"by_member_filter\"): \
                         a group replaced whole from a read would lose its members"
                    .to_owned(),
            });
        }
        self.put_replaced(&path, |endpoint, group| {
            replaced_group(endpoint, group, add, remove)
        })
        .await
        .map_err(too_large_to_put)
    }

    /// The resource at `path` read, changed by `change` and PUT back whole.
    async fn put_replaced(
        &self,
        path: &str,
        change: impl Fn(&str, Value) -> Result<Value, WorkspaceError>,
    ) -> Result<(), WorkspaceError> {
        self.read_modify_write(path, Method::PUT, &[], |endpoint, resource| {
            change(endpoint, resource).map(without_read_only)
        })
        .await
    }

    /// Reads the resource at `path`, builds the request body from it with `build`
    /// and sends it with `method`. Where the provider supports ETags and the read
    /// carried a version (the `ETag` header, else `meta.version`), the write
    /// carries it in `If-Match`, so a change someone made in between is not
    /// overwritten: a 412 reads the resource again and tries once more. A second
    /// 412 fails, not transient: the resource is being changed as fast as it is
    /// read, and the next run reads it afresh. A 412 answering the write sent
    /// again after an attempt that got no answer (the provider applied it, the
    /// answer was lost) is most likely that attempt's own change of the version:
    /// read again once apart, not counted as someone else's change.
    async fn read_modify_write(
        &self,
        path: &str,
        method: Method,
        query: &[(&str, String)],
        build: impl Fn(&str, Value) -> Result<Value, WorkspaceError>,
    ) -> Result<(), WorkspaceError> {
        let lock = self.rmw_lock(path);
        let written = {
            let _held = lock.lock().await;
            self.read_modify_write_locked(path, method, query, build)
                .await
        };
        self.release_rmw_lock(path, lock);
        written
    }

    /// The lock of `path` in [`Inner::rmw_locks`], made on first use.
    fn rmw_lock(&self, path: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(self.rmw_locks().entry(path.to_owned()).or_default())
    }

    /// Drops `path`'s lock from the map when no other write holds or awaits it
    /// (a write cancelled meanwhile leaves its entry, which the next one drops).
    fn release_rmw_lock(&self, path: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.rmw_locks();
        // The map's and this one: nobody else has it.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(path);
        }
    }

    fn rmw_locks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.inner
            .rmw_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn read_modify_write_locked(
        &self,
        path: &str,
        method: Method,
        query: &[(&str, String)],
        build: impl Fn(&str, Value) -> Result<Value, WorkspaceError>,
    ) -> Result<(), WorkspaceError> {
        let etags = self.discovered().etag_supported == Some(true);
        // The version a 412 refused last, and the re-reads spent: one for a change
        // someone else made between read and write, and one for a 412 that answers
        // a write sent again after an attempt carried out unanswered (the answer
        // lost after the provider applied it): the version changed by our own
        // write, which is no one else's change and must not spend the other.
        let mut refused: Option<String> = None;
        let mut reread_for_change = false;
        let mut reread_for_resend = false;
        loop {
            let read_endpoint = endpoint_name(&Method::GET, path, &[]);
            let read = self.send(Method::GET, path, &[], None).await?;
            let resource: Value = self.json_answer(&read_endpoint, &read.body)?;
            let version = read.etag.clone().or_else(|| parse::version(&resource));
            // Read again after a 412 at the very version refused: nothing changed
            // in between, the provider refuses its own tag (a strict server and a
            // weak `W/` tag, RFC 7232 §3.1). Written without `If-Match` then, or
            // the change could never be made.
            let own_tag_refused = refused.is_some() && refused == version;
            if own_tag_refused {
                tracing::warn!(
                    path,
                    version = version.as_deref().unwrap_or_default(),
                    "the provider refused If-Match with the version it just answered; \
                     writing without If-Match"
                );
            }
            let if_match = version.filter(|_| etags && !own_tag_refused);
            let body = build(&read_endpoint, resource)?;
            let (written, resent_unanswered) = self
                .send_if_match(
                    method.clone(),
                    path,
                    query,
                    Some(&body),
                    if_match.as_deref(),
                )
                .await;
            match written {
                Ok(answer) => {
                    tracing::trace!(path, %method, status = answer.status, "written after a read");
                    return Ok(());
                }
                Err(WorkspaceError::Status {
                    endpoint,
                    status: 412,
                    scim_type,
                    detail,
                    retry_after,
                }) if if_match.is_some() => {
                    if resent_unanswered && !reread_for_resend {
                        reread_for_resend = true;
                        refused = if_match;
                        tracing::info!(
                            endpoint,
                            "refused (412) when sent again after an attempt that got no \
                             answer: that attempt was most likely carried out and changed the \
                             version; reading it again"
                        );
                        continue;
                    }
                    if !reread_for_change {
                        reread_for_change = true;
                        refused = if_match;
                        tracing::info!(
                            endpoint,
                            "changed by someone else since it was read (412): reading it again"
                        );
                        continue;
                    }
                    return Err(WorkspaceError::Status {
                        endpoint,
                        status: 412,
                        scim_type,
                        detail: format!(
                            "changed by someone else between read and write twice in a row, \
                             not tried again (the next run reads it afresh): {detail}"
                        ),
                        retry_after,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// GET with a filter: every match on the first page, each once (`id_of` names
    /// it; some providers repeat a resource within a page).
    /// The first page of a listing at `path` (filtered, if `filter`), of at most
    /// `count`: asked with `cursor=` when listings page by cursor (a cursor-only
    /// provider may refuse `startIndex`: scim2-server answers 501), else with
    /// `startIndex=1`; under [`Pagination::Auto`], after a 501 without paging
    /// parameters, as a provider that does not page wants (see `paging`).
    async fn first_page<R: DeserializeOwned>(
        &self,
        path: &str,
        filter: Option<String>,
        count: u32,
    ) -> Result<(String, parse::Page<R>), WorkspaceError> {
        let filter = filter.map(|f| ("filter", f));
        let first_page = if self.pages_by_cursor() {
            ("cursor", String::new())
        } else {
            ("startIndex", "1".to_owned())
        };
        let paged: Vec<(&str, String)> = filter
            .iter()
            .cloned()
            .chain([first_page, ("count", count.to_string())])
            .collect();
        let (endpoint, body) = match self.get_json::<ListBody<R>>(path, &paged).await {
            Err(WorkspaceError::Status { status: 501, .. }) if self.follows_unasked_cursors() => {
                let unpaged: Vec<(&str, String)> = filter.into_iter().collect();
                self.get_json::<ListBody<R>>(path, &unpaged).await?
            }
            answer => answer?,
        };
        let page = parse::page(&endpoint, body, 1)?;
        Ok((endpoint, page))
    }

    async fn find<R: DeserializeOwned, T>(
        &self,
        path: &str,
        filter: String,
        parse_one: impl Fn(&str, R) -> Result<T, WorkspaceError>,
        id_of: impl Fn(&T) -> &str,
    ) -> Result<Vec<T>, WorkspaceError> {
        let (endpoint, page) = self
            .first_page::<R>(path, Some(filter), self.effective_page_size())
            .await?;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for item in page.resources {
            let parsed = parse_one(&endpoint, item)?;
            if seen.insert(id_of(&parsed).to_owned()) {
                out.push(parsed);
            }
        }
        Ok(out)
    }
}

/// The stop a request by `method` watches: a write's, from the apply it is made
/// for ([`crate::apply::write_stop`]); none for a read, whose retries run out as
/// before (a read cut short would leave a plan or a verification with part of
/// the workspace).
fn writes_stop(method: &Method) -> Option<StopSignal> {
    if *method == Method::GET {
        None
    } else {
        crate::apply::write_stop()
    }
}

/// Why a write kept back by a stop was not sent; [`WorkspaceError::is_stopped`]
/// knows it by this.
const STOPPING: &str = "seatwarden was stopping";

impl WorkspaceError {
    /// A write the stop kept back: before its first attempt left, or (`last`, the
    /// error of the attempt before) instead of a retry.
    pub(crate) fn stopped(endpoint: &str, last: Option<&WorkspaceError>) -> WorkspaceError {
        WorkspaceError::NotSent {
            endpoint: endpoint.to_owned(),
            reason: match last {
                None => STOPPING.to_owned(),
                Some(last) => format!("{STOPPING} (no retry after {last})"),
            },
        }
    }

    /// Whether the stop kept this write back (see [`WorkspaceError::stopped`]).
    pub fn is_stopped(&self) -> bool {
        matches!(self, WorkspaceError::NotSent { reason, .. } if reason.starts_with(STOPPING))
    }

    /// Whether a create was not sent again because its userName was found taken
    /// by an account it may not have made, after an attempt whose answer was
    /// lost: a 409 in all but name, which the executor handles as one.
    pub fn is_taken_after_lost_answer(&self) -> bool {
        matches!(
            self,
            WorkspaceError::NotSent { reason, .. } if reason.starts_with(TAKEN_AFTER_LOST_ANSWER)
        )
    }
}

/// Why a create was not sent again: its userName was found taken after an
/// attempt whose answer was lost, by an account whose `externalId` does not
/// name the person. [`WorkspaceError::is_taken_after_lost_answer`] knows it by
/// this.
const TAKEN_AFTER_LOST_ANSWER: &str =
    "again after an attempt whose answer was lost: the userName is taken";

/// The account a create's lookup found before a retry
/// ([`ScimClient::post_account`]). One whose `externalId` is the person's is
/// the one an attempt whose answer was lost made. Any other (another
/// `externalId`, or none: a provider that keeps none, or an account made
/// meanwhile by someone else) is not taken as made: the create fails as one
/// answered 409 fails, and the executor decides whether the account may be the
/// person's as it decides after a 409 (`apply::claimable`), so that the two
/// paths agree.
fn lost_answer_account(
    endpoint: &str,
    spec: &AccountSpec,
    account: Account,
) -> Result<Account, WorkspaceError> {
    if account.external_id.as_deref() == Some(spec.external_id.as_str()) {
        tracing::info!(
            user_name = %spec.user_name,
            id = %account.id,
            "the account was created by an attempt whose answer was lost"
        );
        return Ok(account);
    }
    Err(WorkspaceError::NotSent {
        endpoint: endpoint.to_owned(),
        reason: format!(
            "{TAKEN_AFTER_LOST_ANSWER} by account {} ({}), which this create may not have \
             made",
            account.id,
            match account.external_id.as_deref() {
                Some(other) => format!("externalId {other:?}"),
                None => "no externalId".to_owned(),
            }
        ),
    })
}

/// What one attempt of [`ScimClient::post_unless_made`] came to.
enum Posted<T> {
    /// The POST was answered (2xx).
    Answered(Answer),
    /// The lookup before a retry found what an attempt whose answer was lost made.
    Found(T),
}

/// What failed in one attempt of [`ScimClient::post_unless_made`]: its POST,
/// which that loop retries, or the lookup before it, which `send` has retried
/// already.
enum CreateFailure {
    Post(WorkspaceError),
    Lookup(WorkspaceError),
}

impl CreateFailure {
    fn error(&self) -> &WorkspaceError {
        match self {
            CreateFailure::Post(e) | CreateFailure::Lookup(e) => e,
        }
    }

    fn into_error(self) -> WorkspaceError {
        match self {
            CreateFailure::Post(e) | CreateFailure::Lookup(e) => e,
        }
    }
}

impl std::fmt::Display for CreateFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error().fmt(f)
    }
}

impl Transient for CreateFailure {
    fn is_transient(&self) -> bool {
        match self {
            CreateFailure::Post(e) => e.is_transient(),
            CreateFailure::Lookup(_) => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            CreateFailure::Post(e) => e.retry_after(),
            CreateFailure::Lookup(_) => None,
        }
    }
}

/// A group PUT refused with 413 (Content Too Large; Miro refuses groups past about
/// 8,000 members): said in words, as it cannot be helped by sending it again or in
/// parts. Not transient (`crate::http::status_is_transient`), so not retried.
fn too_large_to_put(error: WorkspaceError) -> WorkspaceError {
    match error {
        WorkspaceError::Status {
            endpoint,
            status: 413,
            scim_type,
            detail,
            retry_after,
        } => WorkspaceError::Status {
            endpoint,
            status: 413,
            scim_type,
            detail: format!(
                "{detail} (without PATCH a group is written whole, every member in one PUT, \
                 and the provider refuses one this large: it cannot be sent in parts; \
                 change the membership in the workspace, or have its PATCH enabled)"
            ),
            retry_after,
        },
        other => other,
    }
}

fn id_clause(id: &str) -> String {
    format!("id eq {}", parse::filter_string(id))
}

/// A group's displayName as the reads of role groups and managed groups
/// compare it: trimmed, then folded as the plan matches workspace groups
/// ([`crate::model::fold_case`]: case aside, accents composed, a character
/// outside ASCII never taken for an ASCII one). Lower-cased alone, a group
/// anyone may make as "Tas\u{212A}ade Owners" (KELVIN SIGN) read as the Owners'
/// group, its members as Owners; and a name typed with a decomposed accent was
/// not the workspace's composed one, whose members were then never read.
fn group_name_key(display_name: &str) -> String {
    crate::model::fold_case(display_name.trim())
}

fn user_name_clause(user_name: &str) -> String {
    format!("userName eq {}", parse::filter_string(user_name))
}

/// A PATCH refused because a path's filter matched nothing (RFC 7644 §3.12).
fn no_target(error: &WorkspaceError) -> bool {
    matches!(
        error,
        WorkspaceError::Status {
            status: 400,
            scim_type: Some(t),
            ..
        } if t.eq_ignore_ascii_case("noTarget")
    )
}

/// The first candidate that `matches`. A single answer is checked too: a provider
/// that ignores a filter it does not support (or applies it loosely) answers with
/// some other account, and linking that one would hand a new hire somebody's
/// account, or deprovision the wrong person when the hire leaves.
fn pick<T>(found: Vec<T>, matches: impl Fn(&T) -> bool) -> Option<T> {
    found.into_iter().find(|x| matches(x))
}

/// `{collection}/{id}` (`/Users/…`, `/Groups/…`) for a request with `method`, or a
/// malformed-response error before any request is built: an id the provider
/// handed out that is empty, `.` or `..` would not name the object (`DELETE
/// /Users/..` is `DELETE /`). See [`crate::http::path_segment`].
fn resource_path(method: &Method, collection: &str, id: &str) -> Result<String, WorkspaceError> {
    crate::http::path_segment(id)
        .map(|segment| format!("{collection}/{segment}"))
        .map_err(|e| {
            WorkspaceError::malformed(&format!("{method} {collection}/{{id}}"), e.to_string())
        })
}

pub(crate) fn endpoint_name(method: &Method, path: &str, query: &[(&str, String)]) -> String {
    let mut endpoint = format!("{method} {path}");
    if !query.is_empty() {
        let plain: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        endpoint.push('?');
        endpoint.push_str(&plain.join("&"));
    }
    endpoint
}

fn patch_body(operations: Vec<Value>) -> Value {
    json!({"schemas": [SCHEMA_PATCH], "Operations": operations})
}

/// The key of `object` that is `name` without regard to case (RFC 7643 §2.1).
fn key_of(object: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    object
        .keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
}

/// Sets (`Some`) or removes (`None`) `name` in `object`, whatever its spelling
/// there: one key stays.
fn set_attribute(object: &mut serde_json::Map<String, Value>, name: &str, value: Option<Value>) {
    object.retain(|k, _| !k.eq_ignore_ascii_case(name));
    if let Some(value) = value {
        object.insert(name.to_owned(), value);
    }
}

/// User `user` as read, with the PATCH operations seatwarden builds (`replace`
/// or `remove` of `attr`, `attr.sub` or an extension's `urn:…:attr`) applied:
/// what a PUT replaces it with. Anything else is an error, not a guess.
fn replaced_user(
    endpoint: &str,
    user: Value,
    operations: &[Value],
) -> Result<Value, WorkspaceError> {
    let Value::Object(mut user) = user else {
        return Err(WorkspaceError::malformed(
            endpoint,
            "the User is not a JSON object",
        ));
    };
    for op in operations {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or_default();
        let path = op.get("path").and_then(Value::as_str).unwrap_or_default();
        let value = match kind {
            "replace" => op.get("value").cloned(),
            "remove" => None,
            _ => {
                return Err(WorkspaceError::NotSent {
                    endpoint: endpoint.to_owned(),
                    reason: format!("cannot turn the PATCH operation {op} into a PUT"),
                });
            }
        };
        let top = if path.starts_with("urn:") {
            path.rsplit_once(':').map_or(path, |(schema, _)| schema)
        } else {
            path.split_once('.')
                .map_or(path, |(attribute, _)| attribute)
        };
        if value.is_none() && key_of(&user, top).is_none() {
            // Nothing to remove.
            continue;
        }
        if path.starts_with("urn:")
            && let Some((schema, attribute)) = path.rsplit_once(':')
        {
            // An extension attribute lives in the extension's object, and the
            // extension is named in `schemas` once it holds something.
            if value.is_some() {
                let schemas = user
                    .entry("schemas")
                    .or_insert_with(|| json!([SCHEMA_USER]));
                if let Value::Array(schemas) = schemas
                    && !schemas
                        .iter()
                        .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(schema)))
                {
                    schemas.push(schema.into());
                }
            }
            let key = key_of(&user, schema).unwrap_or_else(|| schema.to_owned());
            let extension = user.entry(key).or_insert_with(|| json!({}));
            let Value::Object(extension) = extension else {
                return Err(WorkspaceError::malformed(
                    endpoint,
                    format!("the extension {schema:?} is not a JSON object"),
                ));
            };
            set_attribute(extension, attribute, value);
        } else if let Some((attribute, sub)) = path.split_once('.') {
            let key = key_of(&user, attribute).unwrap_or_else(|| attribute.to_owned());
            let complex = user.entry(key).or_insert_with(|| json!({}));
            if complex.is_null() {
                *complex = json!({});
            }
            let Value::Object(complex) = complex else {
                return Err(WorkspaceError::malformed(
                    endpoint,
                    format!("{attribute:?} is not a JSON object"),
                ));
            };
            set_attribute(complex, sub, value);
        } else {
            set_attribute(&mut user, path, value);
        }
    }
    Ok(Value::Object(user))
}

/// Group `group` as read with `add` among its members and `remove` not; the
/// other members keep their entries as read.
fn replaced_group(
    endpoint: &str,
    group: Value,
    add: &[String],
    remove: &[String],
) -> Result<Value, WorkspaceError> {
    let Value::Object(mut group) = group else {
        return Err(WorkspaceError::malformed(
            endpoint,
            "the Group is not a JSON object",
        ));
    };
    let key = key_of(&group, "members");
    let mut members = match key.as_ref().and_then(|k| group.remove(k)) {
        // Members to remove were seen in the group: a read that shows it empty
        // leaves its members out, and the group PUT back from it would lose them
        // all. (A group read empty that only gains members is taken as empty,
        // as RFC 7643 §2.5 reads an unassigned attribute.)
        None | Some(Value::Null) if !remove.is_empty() => {
            return Err(WorkspaceError::NotSent {
                endpoint: endpoint.to_owned(),
                reason: "the group was read without its members, yet members seen in it are \
                         to be removed: replaced whole (no PATCH), it would lose every member \
                         the read left out"
                    .to_owned(),
            });
        }
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(members)) => members,
        Some(_) => {
            return Err(WorkspaceError::malformed(
                endpoint,
                "members is not an array",
            ));
        }
    };
    let member_id = |m: &Value| -> Option<String> {
        match m {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("value"))
                .and_then(|(_, v)| v.as_str())
                .map(str::to_owned),
            _ => None,
        }
    };
    let removed: HashSet<&str> = remove.iter().map(String::as_str).collect();
    members.retain(|m| member_id(m).is_none_or(|id| !removed.contains(id.as_str())));
    let mut present: HashSet<String> = members.iter().filter_map(member_id).collect();
    for id in add {
        if present.insert(id.clone()) {
            members.push(json!({"value": id}));
        }
    }
    group.insert("members".to_owned(), Value::Array(members));
    Ok(Value::Object(group))
}

/// A resource as read, without what a PUT must not send back: `meta` and a
/// User's `groups` are read-only (RFC 7643 §3.1, §4.1.2); `id` may stay.
fn without_read_only(resource: Value) -> Value {
    match resource {
        Value::Object(mut resource) => {
            resource.retain(|k, _| {
                !k.eq_ignore_ascii_case("meta") && !k.eq_ignore_ascii_case("groups")
            });
            Value::Object(resource)
        }
        other => other,
    }
}

fn email_value(email: &str) -> Value {
    json!([{"value": email, "type": "work", "primary": true}])
}

fn roles_value(role: Role) -> Value {
    json!([{"value": role.as_str(), "primary": true}])
}

/// `emails_now`: the account's `emails` as read, for an email change.
fn attribute_op(change: &AttributeChange, emails_now: Option<&[Value]>) -> Value {
    let path = change.attribute.as_str();
    match (&change.to, change.attribute) {
        (None, _) => json!({"op": "remove", "path": path}),
        (Some(email), Attribute::Email) => {
            json!({"op": "replace", "path": path, "value": emails_with(emails_now, email)})
        }
        (Some(value), _) => json!({"op": "replace", "path": path, "value": value}),
    }
}

/// `emails` with `email` in the entry seatwarden reads, made the `primary` one
/// (and no other: RFC 7643 §2.4 allows one), every other entry as it was; a
/// single work email when there is none to keep. Marked primary, the entry is
/// the one read back whatever its new value: among several unmarked ones the
/// smallest is read ([`parse::email_index`]), which a new value may not be.
fn emails_with(emails_now: Option<&[Value]>, email: &str) -> Value {
    let Some(emails) = emails_now.filter(|e| e.iter().all(Value::is_object)) else {
        return email_value(email);
    };
    let Some(index) = parse::email_index(emails) else {
        return email_value(email);
    };
    let mut emails = emails.to_vec();
    for (i, entry) in emails.iter_mut().enumerate() {
        let Value::Object(entry) = entry else {
            continue;
        };
        // Attribute names are case-insensitive (RFC 7643 §2.1): one of each stays.
        let primary = entry
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("primary"))
            .and_then(|(_, v)| parse::loose_bool(v))
            == Some(true);
        if i == index {
            entry.retain(|k, _| {
                !k.eq_ignore_ascii_case("value") && !k.eq_ignore_ascii_case("primary")
            });
            entry.insert("value".to_owned(), email.into());
            entry.insert("primary".to_owned(), true.into());
        } else if primary {
            entry.retain(|k, _| !k.eq_ignore_ascii_case("primary"));
            entry.insert("primary".to_owned(), false.into());
        }
    }
    Value::Array(emails)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// A web page is named by its title, or its first heading without one; an
    /// XML error (an API gateway's) and JSON are no web page, and are quoted.
    #[test]
    fn a_web_page_is_told_from_an_xml_error_and_named_by_title_or_heading() {
        let html = Some("text/html; charset=utf-8");
        assert_eq!(
            web_page_title(None, "<!DOCTYPE html><html><title> Bad gateway </title>"),
            Some("Bad gateway")
        );
        assert_eq!(
            web_page_title(html, "<body><H1 class=\"x\">Forbidden</H1>"),
            Some("Forbidden")
        );
        assert_eq!(web_page_title(html, "<h1><b>Forbidden</b></h1>"), Some(""));
        assert_eq!(
            web_page_title(
                Some("application/xml"),
                "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code></Error>"
            ),
            None
        );
        assert_eq!(web_page_title(None, r#"{"detail": "<html>"}"#), None);
        // Labelled a page, but none: an empty 204, JSON a framework mislabelled.
        assert_eq!(web_page_title(html, ""), None);
        assert_eq!(web_page_title(html, " \n"), None);
        assert_eq!(web_page_title(html, r#"{"id": "u1"}"#), None);
        assert_eq!(
            web_page_title(html, "\u{feff}<html><title>Request Rejected</title>"),
            Some("Request Rejected")
        );
    }

    /// Settings built without the configuration's bounds: a concurrency past
    /// what the semaphore holds is an error, not its panic.
    #[test]
    fn a_concurrency_past_the_semaphores_maximum_is_an_error() {
        let url = url::Url::parse("https://scim.example.com/scim/v2").unwrap();
        let settings = ScimSettings {
            max_concurrency: usize::MAX,
            ..ScimSettings::for_test(url)
        };
        let Err(error) = ScimClient::new(settings) else {
            panic!("a client with usize::MAX permits");
        };
        assert!(
            error
                .to_string()
                .contains("max_concurrency must be at most"),
            "{error}"
        );
    }

    /// An email written into the entry read is the one read back, whatever its
    /// value: the smallest of several unmarked entries is read, and a new value
    /// may not be the smallest; marked primary (and no other), it is read.
    #[test]
    fn an_email_written_is_the_one_read_back() {
        let read_back = |emails: Value| {
            let user = json!({"id": "1", "userName": "a", "emails": emails});
            parse::account("GET /Users/1", &user, &RoleAttribute::None)
                .unwrap()
                .email
        };
        for emails in [
            json!([{"value": "m@x.example", "type": "other"}, {"value": "b@x.example"}]),
            json!([{"value": "m@x.example", "primary": true}, {"value": "b@x.example", "Primary": "true"}]),
            json!([{"value": "a@x.example", "type": "work"}, {"value": "b@x.example", "type": "work"}]),
        ] {
            let now = emails.as_array().unwrap().clone();
            let written = emails_with(Some(&now), "z@x.example");
            assert_eq!(
                read_back(written.clone()).as_deref(),
                Some("z@x.example"),
                "{written}"
            );
            // The other entry is kept, its value as it was.
            assert_eq!(written.as_array().unwrap().len(), 2, "{written}");
        }
    }

    #[test]
    fn role_attribute_parses() {
        assert_eq!(RoleAttribute::parse("roles"), Ok(RoleAttribute::Roles));
        assert_eq!(RoleAttribute::parse("None"), Ok(RoleAttribute::None));
        assert_eq!(
            RoleAttribute::parse("urn:ietf:params:scim:schemas:extension:taskade:2.0:User:role"),
            Ok(RoleAttribute::Extension {
                schema: "urn:ietf:params:scim:schemas:extension:taskade:2.0:User".into(),
                attribute: "role".into(),
            })
        );
        assert_eq!(
            RoleAttribute::parse(" Groups "),
            Ok(RoleAttribute::Groups { groups: Vec::new() })
        );
        assert!(RoleAttribute::parse("role").is_err());
        assert!(RoleAttribute::parse("urn:x:").is_err());
    }

    fn client_with_pages_of(page_size: u32) -> ScimClient {
        ScimClient::new(ScimSettings {
            page_size,
            timeout: Duration::from_secs(1),
            ..ScimSettings::for_test("http://127.0.0.1:9/scim/v2".parse().unwrap())
        })
        .unwrap()
    }

    #[test]
    fn id_batches_keep_every_id_in_order_within_the_limits() {
        let uuid = |i: usize| format!("{i:08x}-5f2c-4a7e-9d4b-1c2e3f4a5b6c");
        let ids: Vec<String> = (0..100).map(uuid).collect();
        let client = client_with_pages_of(1000);
        let batches = client.id_batches(ids.clone(), usize::MAX);
        assert_eq!(batches.concat(), ids);
        for batch in &batches {
            let filter: Vec<String> = batch.iter().map(|id| id_clause(id)).collect();
            let encoded = encode_component(&filter.join(" or "));
            assert!(encoded.len() <= ID_FILTER_BYTES, "{}", encoded.len());
        }
        // Full batches: the next id would not have fitted.
        let per_batch = batches[0].len();
        assert!(
            (25..=35).contains(&per_batch),
            "{per_batch} UUIDs a request"
        );
        assert!(
            batches[..batches.len() - 1]
                .iter()
                .all(|b| b.len() == per_batch)
        );
        // Neither more than asked for nor more than a page.
        assert!(
            client
                .id_batches(ids.clone(), 10)
                .iter()
                .all(|b| b.len() <= 10)
        );
        let small_pages = client_with_pages_of(7);
        let batches = small_pages.id_batches(ids.clone(), usize::MAX);
        assert_eq!(batches.len(), 15);
        assert_eq!(batches.concat(), ids);
        // An id too long for the limit on its own still gets its request.
        let long = vec!["x".repeat(ID_FILTER_BYTES)];
        assert_eq!(client.id_batches(long.clone(), usize::MAX), vec![long]);
        assert!(client.id_batches(Vec::new(), usize::MAX).is_empty());
    }

    /// A workspace that does not answer (a closed port) is not retried in
    /// silence: the first failure names the request at warn, the end of the
    /// retries too.
    #[tokio::test]
    async fn a_request_that_is_retried_says_so_in_the_log() {
        let mut client = client_with_pages_of(100);
        Arc::get_mut(&mut client.inner).unwrap().retry = RetryPolicy::immediate(2);
        let (outcome, log) = crate::retry::logged(client.confirm_users_endpoint()).await;
        assert!(outcome.is_err());
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 2, "{log}");
        assert!(
            warnings[0].contains("GET /Users") && warnings[0].contains("retrying up to 2 times"),
            "{log}"
        );
        assert!(
            warnings[1].contains("GET /Users")
                && warnings[1].contains("giving up after 3 attempts"),
            "{log}"
        );
    }

    #[test]
    fn query_components_use_percent_twenty() {
        assert_eq!(
            encode_component(r#"userName eq "a b""#),
            "userName%20eq%20%22a%20b%22"
        );
    }

    fn group(id: &str, name: &str, members: &[&str]) -> WorkspaceGroup {
        WorkspaceGroup {
            id: id.to_owned(),
            display_name: name.to_owned(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        }
    }

    /// A managed group is short of the accounts whose own `groups` name it
    /// unless it holds them, itself or through a group nested in it (cycles
    /// harmless); an unmanaged group never is, nor is any group when no
    /// account names one. Refused, the error names the request, the counts,
    /// the first account missing and what to set.
    #[test]
    fn a_managed_group_short_of_the_accounts_naming_it_is_found_and_refused() {
        let client = ScimClient::new(ScimSettings {
            managed_groups: vec!["Engineering".to_owned(), "Design".to_owned()],
            ..ScimSettings::for_test("https://ws.example.com/scim/v2".parse().unwrap())
        })
        .unwrap();
        let groups = [
            group("g-eng", "Engineering", &["a1", "g-sub"]),
            group("g-sub", "Platform", &["a2", "g-eng"]),
            group("g-design", "Design", &["a1"]),
            group("g-other", "Other", &[]),
        ];
        let named = |pairs: &[(&str, &[&str])]| -> HashMap<String, Vec<String>> {
            pairs
                .iter()
                .map(|(g, ids)| {
                    (
                        (*g).to_owned(),
                        ids.iter().map(|i| (*i).to_owned()).collect(),
                    )
                })
                .collect()
        };
        assert!(client.short_groups(&groups, &HashMap::new()).is_empty());
        let held = named(&[
            ("g-eng", &["a1", "a2"]),
            ("g-sub", &["a2"]),
            ("g-other", &["a1", "a2"]),
        ]);
        assert!(client.short_groups(&groups, &held).is_empty());
        let short = client.short_groups(
            &groups,
            &named(&[
                ("g-eng", &["a1", "a2", "a3"]),
                ("g-design", &["a1", "a3", "a4"]),
            ]),
        );
        let found: Vec<(&str, usize, usize, Vec<&str>)> = short
            .iter()
            .map(|s| {
                let missing = s.missing.iter().map(String::as_str).collect();
                (s.id.as_str(), s.members, s.named, missing)
            })
            .collect();
        assert_eq!(
            found,
            [
                ("g-eng", 2, 3, vec!["a3"]),
                ("g-design", 1, 3, vec!["a3", "a4"]),
            ]
        );

        let snapshot = WorkspaceSnapshot {
            accounts: vec![Account {
                id: "a3".to_owned(),
                user_name: "cy@example.com".to_owned(),
                external_id: None,
                given_name: None,
                family_name: None,
                display_name: None,
                email: None,
                active: true,
                roles: Vec::new(),
            }],
            groups: groups.to_vec(),
        };
        let error = short_group_error(&snapshot, &short[1], None);
        assert_eq!(
            error.to_string(),
            "GET /Groups/g-design: malformed response: workspace group \"Design\" shows 1 \
             member, in the listing and read on its own, yet 2 of the 3 accounts whose own \
             groups name it are not among them (accounts \"a3\" (cy@example.com), \"a4\"), \
             in two reads of the workspace: either the provider caps or leaves out part of \
             the group's members (read short, an account left out would never be removed \
             from the group, and would be added to it again on every run), or the accounts' \
             own groups are stale (some providers keep naming a group an account has left, \
             as after it was deactivated and reactivated); compare the group's members (`GET \
             /Groups/g-design`) and the account's groups (`GET /Users/a3`) with the \
             workspace's admin console: if the group does not hold \"a3\", its groups are \
             stale, for the provider to fix; if it does, check the provider's limit on the \
             members it returns for a group, and that the token may read every member. \
             Either way, workspace.group_members = \"by_member_filter\" (each account's \
             groups asked of /Groups with a members.value filter, not read from its own \
             groups, for a provider that answers one) reads the groups' side alone"
        );
        assert!(!error.is_transient());
        let many = ShortGroup {
            id: "g-design".to_owned(),
            display_name: "Design".to_owned(),
            members: 1,
            named: 6,
            missing: ["a3", "a4", "a5", "a6", "a7"].map(str::to_owned).to_vec(),
        };
        let many = short_group_error(&snapshot, &many, None).to_string();
        assert!(
            many.contains(
                "(accounts \"a3\" (cy@example.com), \"a4\", \"a5\", 2 more), in two reads"
            ),
            "{many}"
        );
        let role_group = ShortGroup {
            members: 0,
            ..short.into_iter().next().unwrap()
        };
        let error = short_group_error(&snapshot, &role_group, Some(Role::Editor)).to_string();
        assert!(
            error.contains(
                "shows no members, in the listing and read on its own, yet 1 of the 3 accounts"
            ) && error.contains(
                "an account left out would read as not holding the role Editor and be given a \
                 role on every run"
            ),
            "{error}"
        );
    }
}
