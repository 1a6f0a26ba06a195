//! An in-process SCIM 2.0 service provider that behaves like a Taskade
//! organization, for `seatwarden demo`, integration tests and benchmarks.
//!
//! It serves `/scim/v2` on a loopback listener the caller binds: Users (userName
//! unique case-insensitively, externalId, name, emails, active, roles), Groups
//! (workspaces/folders) with members, ETags (`meta.version`, `If-Match` → 412),
//! index and cursor paging (RFC 9865, [`SandboxPaging`]), `eq` filters with `and`
//! and `or`, PATCH add/replace/remove (200 with the resource; or, switched off by
//! [`SandboxOptions::patch_supported`] or `--no-patch`, announced unsupported and
//! answered 501),
//! PUT (replace, 200 with the resource), SCIM error bodies, 501 for `/Me` and
//! `/Bulk` (RFC 7644 §3.11, §3.7; `bulk.supported: false`),
//! discovery endpoints and bearer auth, for requests whose `Host` is `localhost` or
//! a loopback address only (421 otherwise: DNS rebinding). State lives in memory
//! (the private `store` module) behind a read-write lock: reads share it, writes
//! take it alone, and no request holds it across an await.
//!
//! Decisions worth knowing:
//! - **Members are checked**: adding or replacing members with an id that is not an
//!   existing User is 400 `invalidValue` and the whole PATCH is rejected (PATCH is
//!   atomic). Removing a member that is not there succeeds (retries must). Deleting
//!   a User removes it from every group.
//! - **Members can be hidden** ([`SandboxOptions::members_hidden`]), as AWS IAM
//!   Identity Center hides them: `"members": []` in every answer, found only by
//!   `members.value eq "<user>"` or `id eq "<group>" and members eq "<user>"`
//!   filters, and 404 for such a filter naming a User that does not exist; or
//!   capped ([`Faults::members_cap`]): at most N shown, with no marker.
//! - **Users name their groups**: a User's read-only `groups` (RFC 7643
//!   §4.1.2) lists every group holding it, `direct`ly or through a group a seed
//!   nested (`indirect`), with `$ref` and `display`, kept as members change
//!   (absent while members are hidden, as AWS sends none). A seed may nest a
//!   group in another (a member that is a group's id, served with `type`
//!   `Group`); a write may add Users only, as Taskade's groups do not nest. A
//!   change of a User's groups leaves its version as it is (the attribute is
//!   derived from the groups). A test may make them stale
//!   ([`Sandbox::name_stale_groups`]): a User then names a group that does
//!   not hold it.
//! - **Group displayNames are unique** (case-insensitively), like userNames: a
//!   create or rename to a taken name is 409 `uniqueness`. A seed may still give
//!   several groups one name, as a copy of a workspace whose folders share one
//!   (seatwarden plans such a match as disputed); those groups take other writes.
//! - **Faults** ([`Faults`]) are decided before auth and handling, from one seeded
//!   splitmix64 draw per request in arrival order, so a faulted request never
//!   changes state. Latency applies to every request. A *reset* answers with a body
//!   stream that fails before its first byte: hyper then aborts the connection
//!   without flushing the response head, and the client sees "connection closed
//!   before message completed" (reqwest/hyper `IncompleteMessage`), as when a load
//!   balancer drops it. The request is not applied.
//! - **Lost answers** ([`Sandbox::lose_answers`]) are staged, not drawn: the
//!   next requests of a method on a collection are handled as usual (a write is
//!   applied) and then their connection is dropped as a reset drops it, so the
//!   client sees a failure for a write the workspace made: a timeout or a load
//!   balancer cutting the answer after the provider committed.
//! - **A client crash** ([`Sandbox::cut_answers_after`], tests only) is staged
//!   the same way: from the n-th request (or write) on, every request is handled
//!   and its answer lost, until [`Sandbox::answer_again`]; the test kills the
//!   client once [`Sandbox::answers_cut`] says so. The request that crosses the
//!   line is thus processed, its answer never read: what a client killed between
//!   sending a write and reading its answer leaves.
//! - **A frozen client** ([`Sandbox::hold_writes_from`], tests only): from the
//!   n-th write on, writes wait unhandled until [`Sandbox::release_writes`], so a
//!   test kills a client with exactly n - 1 writes made, however late it looks.
//! - Attributes the sandbox does not model are ignored on POST/PUT; a PATCH `path`
//!   naming one is 400 `invalidPath`, one naming `id` or `meta` 400 `mutability`
//!   (path-less PATCH values skip all of them). PUT
//!   replaces every modelled attribute; an absent `active` means `true`.
//! - Lists are in id order. A cursor stands for the last id of the page before
//!   (hex) and when it was issued, so pages by cursor neither skip nor repeat a
//!   resource when others are created or deleted meanwhile; past
//!   `cursor_timeout` it is 400 `expiredCursor`.
//! - `excludedAttributes` is honoured (top-level and `a.b`) on listings and reads
//!   by id, and `members` on a Group PATCH's answer; `attributes` is ignored (the
//!   full resource is returned, which RFC 7644 clients tolerate).
//!   Filters on userName, externalId, id and (Groups) displayName and members use
//!   indexes; the other supported attributes
//!   (displayName, name.*, emails, roles, active on Users) scan.
//! - A write that changes nothing (re-adding a member) keeps the version/ETag.
//! - Requests can be recorded ([`Sandbox::record_requests`]), in the order they
//!   were handled, with their status and a write's body: crash tests count what
//!   reached the workspace, and which write was made twice.
//! - A concurrent writer can be staged ([`Sandbox::change_after_reads`]): a
//!   resource changes right after it was read by id, so the reader's version is
//!   stale when it writes.
//! - Responses are serialised straight from borrowed views of the stored users
//!   and groups (byte for byte what a `Value` rendering gives, which stays for
//!   `excludedAttributes`): benchmarks run the sandbox in seatwarden's process,
//!   and a page of 1,000 users built as `Value`s cost more CPU than reading it.

mod discovery;
mod filter;
mod store;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::model::WorkspaceSnapshot;
use store::{ListQuery, Rendered, ScimError, Store};

const SCIM_JSON: &str = "application/scim+json";
const PREFIX: &str = "/scim/v2";

/// Injected failures. The rates are shares of requests in 0–1, drawn in the order
/// reset, 429, 5xx from one number per request (so they add up; past 1 the later
/// kinds get what is left). `Default` injects nothing.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// Added to every request before it is answered.
    pub latency: Duration,
    pub rate_429: f64,
    /// Answered 503 with a SCIM error body.
    pub rate_5xx: f64,
    /// Connections dropped without a complete response.
    pub rate_reset: f64,
    /// The `Retry-After` (seconds) sent with a 429.
    pub retry_after_secs: u64,
    /// Seeds the fault PRNG; the same seed and request order give the same faults.
    pub seed: u64,
    /// The rates apply to writes (POST, PUT, PATCH, DELETE) only; reads always work.
    pub writes_only: bool,
    /// Unfiltered listings return their first page and claim it is everything
    /// (`totalResults` = the page): the page-cap lie some providers tell.
    pub first_page_only: bool,
    /// A Group shows at most this many of its `members` (the first, in id
    /// order), listed and read alike, with no marker, while Users' own
    /// `groups` still name it: a provider that caps a multi-valued attribute
    /// (RFC 7644 pages resources, not an attribute's values).
    pub members_cap: Option<usize>,
}

/// Which paging the sandbox serves and announces in `/ServiceProviderConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxPaging {
    /// `startIndex`/`count` only; a `cursor` parameter is ignored.
    #[default]
    Index,
    /// `cursor`/`count` only: every listing is paged by cursor and `startIndex`
    /// is ignored (RFC 9865 §2.6), as AWS IAM Identity Center pages.
    Cursor,
    /// Both: by cursor when the request has a `cursor` parameter, else by index.
    Both,
}

#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// The bearer token every request must carry.
    pub token: String,
    /// `filter.maxResults`: the default and the cap of `count`.
    pub max_results: usize,
    /// Whether list filters may say `or` (RFC 7644 §3.4.2.2). Off, such a filter
    /// is `400 invalidFilter`, as from eq-only providers (AWS IAM Identity Center).
    pub or_filters: bool,
    /// Groups show `"members": []` in every answer; members are found only by
    /// `members` filters, and one naming a User that does not exist is 404: as
    /// AWS IAM Identity Center serves groups. Seatwarden then needs
    /// `workspace.group_members = "by_member_filter"`.
    pub members_hidden: bool,
    pub paging: SandboxPaging,
    /// How long a cursor stays valid (`cursorTimeout`); `None`: for ever.
    pub cursor_timeout: Option<Duration>,
    /// Whether PATCH is supported. Off, `/ServiceProviderConfig` announces
    /// `patch.supported: false` and every PATCH is answered 501 (RFC 7644
    /// §3.12), as from a provider that only replaces resources with PUT.
    pub patch_supported: bool,
    pub faults: Faults,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            token: "sandbox-token".to_owned(),
            max_results: 1000,
            or_filters: true,
            members_hidden: false,
            paging: SandboxPaging::Index,
            cursor_timeout: None,
            patch_supported: true,
            faults: Faults::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SandboxStats {
    /// Every request received, faulted ones included.
    pub requests: u64,
    /// Successful POST, PUT, PATCH and DELETE requests.
    pub writes: u64,
    pub faults_429: u64,
    pub faults_5xx: u64,
    pub resets: u64,
    /// List requests answered `400 invalidFilter` because their filter said `or`
    /// while [`SandboxOptions::or_filters`] is off.
    pub or_filters_refused: u64,
    /// Authorized PATCH requests, answered or (PATCH switched off) refused.
    pub patches: u64,
    /// Authorized PUT requests.
    pub puts: u64,
}

/// A request the sandbox handled while [`Sandbox::record_requests`] was on:
/// authorized and past its faults, so a write with a 2xx `status` changed the
/// workspace.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenRequest {
    pub method: String,
    /// Below the `/scim/v2` prefix, without the query: `/Users/{id}`.
    pub path: String,
    pub status: u16,
    /// A write's body as sent (`Null` for a read, or a body that is not JSON).
    pub body: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox listener: {0}")]
    Listener(#[source] std::io::Error),
    #[error("sandbox options: {0}")]
    Options(String),
    #[error("sandbox seed: {0}")]
    Seed(String),
    #[error("cannot read seed file {path}: {source}")]
    SeedRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("seed file {path}: {message}")]
    SeedFile { path: PathBuf, message: String },
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to decide
/// faults and make ids; no rand crate needed.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Reset,
    TooMany,
    Unavailable,
}

struct FaultState {
    faults: Faults,
    rng: SplitMix64,
}

impl FaultState {
    fn new(faults: Faults) -> FaultState {
        let clamp = |r: f64| if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) };
        let faults = Faults {
            rate_429: clamp(faults.rate_429),
            rate_5xx: clamp(faults.rate_5xx),
            rate_reset: clamp(faults.rate_reset),
            ..faults
        };
        FaultState {
            rng: SplitMix64(faults.seed),
            faults,
        }
    }

    /// The latency and fault for the next request.
    fn draw(&mut self) -> (Duration, Option<Fault>, u64) {
        let f = self.faults;
        if f.rate_reset + f.rate_429 + f.rate_5xx <= 0.0 {
            return (f.latency, None, f.retry_after_secs);
        }
        let x = self.rng.next_f64();
        let fault = if x < f.rate_reset {
            Some(Fault::Reset)
        } else if x < f.rate_reset + f.rate_429 {
            Some(Fault::TooMany)
        } else if x < f.rate_reset + f.rate_429 + f.rate_5xx {
            Some(Fault::Unavailable)
        } else {
            None
        };
        (f.latency, fault, f.retry_after_secs)
    }
}

struct Shared {
    /// Reads share the lock, so concurrent GETs render in parallel as they would
    /// against a real service; writes are exclusive.
    store: RwLock<Store>,
    faults: Mutex<FaultState>,
    /// Changed while serving by [`Sandbox::set_token`] (a token revoked mid-run).
    token: RwLock<String>,
    max_results: usize,
    paging: SandboxPaging,
    cursor_timeout: Option<Duration>,
    base: String,
    requests: AtomicU64,
    writes: AtomicU64,
    faults_429: AtomicU64,
    faults_5xx: AtomicU64,
    resets: AtomicU64,
    /// Off: `/ServiceProviderConfig` says `patch.supported: false` and PATCH is 501.
    patch_supported: AtomicBool,
    patches: AtomicU64,
    puts: AtomicU64,
    /// Staged concurrent changes: (collection, id) → PATCH operations to apply
    /// after each of the next reads of that resource, in order.
    changes_after_reads: Mutex<HashMap<(String, String), VecDeque<Value>>>,
    /// Requests being handled (waiting out their latency included): once a
    /// client is gone, zero means none of its requests can still change state.
    in_progress: AtomicU64,
    /// Set by [`Sandbox::record_requests`]: unset, no request takes `seen`'s lock
    /// (the benchmarks serve thousands of requests a second from this process).
    recording: AtomicBool,
    /// `Some` while [`Sandbox::record_requests`] is on.
    seen: Mutex<Option<Vec<SeenRequest>>>,
    /// Staged by [`Sandbox::lose_answers`]: (method, collection) → how many of
    /// the next such requests are handled and then not answered.
    lost_answers: Mutex<HashMap<(String, String), usize>>,
    /// Set while a cut staged by [`Sandbox::cut_answers_after`] waits or lasts:
    /// unset, no request takes `cut`'s lock.
    cut_staged: AtomicBool,
    cut: Mutex<Cut>,
    /// Set while a hold staged by [`Sandbox::hold_writes_from`] waits or lasts:
    /// unset, no write takes `hold_after`'s lock (the benchmarks' writes).
    hold_staged: AtomicBool,
    /// Writes still handled before a hold staged by [`Sandbox::hold_writes_from`]
    /// comes; `None` while none is staged.
    hold_after: Mutex<Option<u64>>,
    /// Whether writes wait ([`Sandbox::hold_writes_from`] came, and no
    /// [`Sandbox::release_writes`] yet): false lets the waiting ones go on.
    holding: tokio::sync::watch::Sender<bool>,
    /// Writes waiting for [`Shared::holding`] to end.
    held: AtomicU64,
}

/// A client crash staged by [`Sandbox::cut_answers_after`].
#[derive(Debug, Default)]
struct Cut {
    /// Requests (of the kind counted) still answered before the cut.
    left: u64,
    /// Only writes count towards the cut (every request is cut once it came).
    writes_only: bool,
    /// The cut came: every answer is lost until [`Sandbox::answer_again`].
    cutting: bool,
}

/// Counts a request in [`Shared::in_progress`] (or a held write in
/// [`Shared::held`]) until it is answered or dropped (its client went away
/// during its latency or its hold).
struct InProgress<'a>(&'a AtomicU64);

impl<'a> InProgress<'a> {
    fn new(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        InProgress(count)
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    fn store(&self) -> RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn store_read(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the answer to this request, already handled, is to be lost
    /// ([`Sandbox::lose_answers`]); counts it off if so.
    fn loses_answer(&self, method: &Method, uri: &Uri) -> bool {
        let mut lost = self
            .lost_answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if lost.is_empty() {
            return false;
        }
        let collection = uri
            .path()
            .strip_prefix(PREFIX)
            .unwrap_or(uri.path())
            .split('/')
            .find(|s| !s.is_empty())
            .unwrap_or_default();
        let key = (method.as_str().to_owned(), collection.to_owned());
        match lost.get_mut(&key) {
            Some(left) if *left > 0 => {
                *left -= 1;
                if *left == 0 {
                    lost.remove(&key);
                }
                true
            }
            _ => false,
        }
    }

    /// Whether the answer to this request, already handled, is lost to a staged
    /// cut ([`Sandbox::cut_answers_after`]); counts it towards the cut if not yet.
    fn cuts_answer(&self, write: bool) -> bool {
        if !self.cut_staged.load(Ordering::SeqCst) {
            return false;
        }
        let mut cut = self.cut.lock().unwrap_or_else(PoisonError::into_inner);
        if !cut.cutting && (write || !cut.writes_only) {
            cut.left = cut.left.saturating_sub(1);
            cut.cutting = cut.left == 0;
        }
        cut.cutting
    }

    /// Counts a write towards a staged hold ([`Sandbox::hold_writes_from`]) and,
    /// once it came, waits until it ends; dropped with the request when its
    /// client goes away.
    async fn wait_if_held(&self) {
        if !self.hold_staged.load(Ordering::SeqCst) {
            return;
        }
        {
            let mut hold_after = self
                .hold_after
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match hold_after.as_mut() {
                None => return,
                // Under the lock: a release after it ends this hold too.
                Some(0) => {
                    self.holding.send_replace(true);
                }
                Some(left) => {
                    *left -= 1;
                    return;
                }
            }
        }
        let _held = InProgress::new(&self.held);
        // Only `release_writes` ends it; the sender lives as long as `self`.
        let _ = self.holding.subscribe().wait_for(|holding| !*holding).await;
    }

    /// After resource `id` of `collection` was read: the next change staged for
    /// it, made as another client would make it (no `If-Match`).
    fn change_after_read(&self, collection: &str, id: &str, now: chrono::DateTime<chrono::Utc>) {
        let operations = self
            .changes_after_reads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&(collection.to_owned(), id.to_owned()))
            .and_then(VecDeque::pop_front);
        let Some(operations) = operations else {
            return;
        };
        let body = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": operations,
        });
        let mut store = self.store();
        let changed = match collection {
            "Users" => store.patch_user(id, &body, None, now).map(drop),
            _ => store.patch_group(id, &body, None, now, false).map(drop),
        };
        if let Err(e) = changed {
            tracing::warn!(collection, id, error = ?e, "a staged concurrent change failed");
        }
    }
}

/// A running sandbox. Dropping it stops the server too; [`Sandbox::shutdown`] waits.
pub struct Sandbox {
    shared: Arc<Shared>,
    base_url: url::Url,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Serves on an already bound listener (tests bind 127.0.0.1:0) until `shutdown`.
    /// The seed's ids are kept; resources created later get fresh uuid-shaped ids.
    pub async fn start(
        listener: tokio::net::TcpListener,
        options: SandboxOptions,
        seed: WorkspaceSnapshot,
    ) -> Result<Sandbox, SandboxError> {
        if options.token.is_empty() {
            return Err(SandboxError::Options(
                "the token must not be empty".to_owned(),
            ));
        }
        if options.max_results == 0 {
            return Err(SandboxError::Options(
                "max_results must be at least 1".to_owned(),
            ));
        }
        let addr = listener.local_addr().map_err(SandboxError::Listener)?;
        // A listener on 0.0.0.0 is still reached over loopback by the caller.
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        let base = format!("http://{host}:{}{PREFIX}", addr.port());
        let base_url = url::Url::parse(&base)
            .map_err(|e| SandboxError::Options(format!("base URL {base}: {e}")))?;
        let mut store = Store::new(&base, seed, chrono::Utc::now()).map_err(SandboxError::Seed)?;
        store.set_or_filters(options.or_filters);
        store.set_members_hidden(options.members_hidden);
        store.set_members_cap(options.faults.members_cap);
        let shared = Arc::new(Shared {
            store: RwLock::new(store),
            faults: Mutex::new(FaultState::new(options.faults)),
            token: RwLock::new(options.token),
            max_results: options.max_results,
            paging: options.paging,
            cursor_timeout: options.cursor_timeout,
            base,
            requests: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            faults_429: AtomicU64::new(0),
            faults_5xx: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            patch_supported: AtomicBool::new(options.patch_supported),
            patches: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            changes_after_reads: Mutex::new(HashMap::new()),
            in_progress: AtomicU64::new(0),
            recording: AtomicBool::new(false),
            seen: Mutex::new(None),
            lost_answers: Mutex::new(HashMap::new()),
            cut_staged: AtomicBool::new(false),
            cut: Mutex::new(Cut::default()),
            hold_staged: AtomicBool::new(false),
            hold_after: Mutex::new(None),
            holding: tokio::sync::watch::Sender::new(false),
            held: AtomicU64::new(0),
        });
        let app = Router::new()
            .fallback(handle)
            // Group PUTs of a large workspace can be big; the default 2 MB is not enough.
            .layer(DefaultBodyLimit::max(256 * 1024 * 1024))
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // A dropped sender (the Sandbox dropped) stops the server as well.
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "sandbox server stopped with an error");
            }
        });
        Ok(Sandbox {
            shared,
            base_url,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:P/scim/v2`
    pub fn base_url(&self) -> url::Url {
        self.base_url.clone()
    }

    /// The current state, read directly; accounts and groups sorted by id, members
    /// sorted.
    pub fn snapshot(&self) -> WorkspaceSnapshot {
        self.shared.store_read().snapshot()
    }

    pub fn stats(&self) -> SandboxStats {
        let s = &self.shared;
        SandboxStats {
            requests: s.requests.load(Ordering::Relaxed),
            writes: s.writes.load(Ordering::Relaxed),
            faults_429: s.faults_429.load(Ordering::Relaxed),
            faults_5xx: s.faults_5xx.load(Ordering::Relaxed),
            resets: s.resets.load(Ordering::Relaxed),
            or_filters_refused: s.store_read().or_refused(),
            patches: s.patches.load(Ordering::Relaxed),
            puts: s.puts.load(Ordering::Relaxed),
        }
    }

    /// Records every request handled from now on ([`SeenRequest`]), in order.
    pub fn record_requests(&self) {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(Vec::new);
        self.shared.recording.store(true, Ordering::SeqCst);
    }

    /// The requests recorded since [`Sandbox::record_requests`], in the order they
    /// were handled.
    pub fn requests_seen(&self) -> Vec<SeenRequest> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default()
    }

    /// How many requests are being handled now, those waiting out their latency
    /// included.
    pub fn requests_in_progress(&self) -> u64 {
        self.shared.in_progress.load(Ordering::SeqCst)
    }

    /// Turns PATCH support ([`SandboxOptions::patch_supported`]) on or off while
    /// serving; a client that already read `/ServiceProviderConfig` goes on
    /// believing what it read.
    pub fn set_patch_supported(&self, supported: bool) {
        self.shared
            .patch_supported
            .store(supported, Ordering::Relaxed);
    }

    /// Stages a concurrent writer: right after each of the next reads of
    /// `/{collection}/{id}` (`"Users"` or `"Groups"`), the next of `changes`
    /// (each a list of PATCH operations) is applied to it, so whoever read it
    /// holds a stale version. Reads by filter or listing do not count.
    pub fn change_after_reads(&self, collection: &str, id: &str, changes: Vec<Value>) {
        self.shared
            .changes_after_reads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((collection.to_owned(), id.to_owned()))
            .or_default()
            .extend(changes);
    }

    /// Stages lost answers: the next `count` requests by `method` (`"POST"`,
    /// `"PATCH"`, …) on `collection` (`"Users"`, `"Groups"`; the collection or
    /// one of its resources) are handled as usual, a write applied, and then
    /// their connection is dropped before the answer leaves, as a reset drops it.
    /// The client sees a failed write the workspace made. Recorded requests
    /// ([`Sandbox::record_requests`]) show them with the status they were given.
    pub fn lose_answers(&self, method: &str, collection: &str, count: usize) {
        *self
            .shared
            .lost_answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((method.to_ascii_uppercase(), collection.to_owned()))
            .or_default() += count;
    }

    /// Stages a crash of the client, for tests: the `n`-th request handled from
    /// now on (past its faults and the token; with `writes_only`, the `n`-th
    /// POST, PUT, PATCH or DELETE) and every request after it are handled as
    /// usual, a write applied, and then their connection is dropped before the
    /// answer leaves, as [`Sandbox::lose_answers`] drops it: the answers a client
    /// that died right after sending them never read. [`Sandbox::answers_cut`]
    /// says whether the cut came (the test then kills the client);
    /// [`Sandbox::answer_again`] ends it. `n` = 0 is taken as 1. Nothing changes
    /// for a sandbox this is never called on.
    pub fn cut_answers_after(&self, n: u64, writes_only: bool) {
        *self
            .shared
            .cut
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Cut {
            left: n.max(1),
            writes_only,
            cutting: false,
        };
        self.shared.cut_staged.store(true, Ordering::SeqCst);
    }

    /// Whether the cut staged by [`Sandbox::cut_answers_after`] came: a request
    /// lost its answer to it.
    pub fn answers_cut(&self) -> bool {
        self.shared.cut_staged.load(Ordering::SeqCst)
            && self
                .shared
                .cut
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .cutting
    }

    /// Ends a cut ([`Sandbox::cut_answers_after`]), come or still staged: every
    /// request is answered again.
    pub fn answer_again(&self) {
        self.shared.cut_staged.store(false, Ordering::SeqCst);
        *self
            .shared
            .cut
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Cut::default();
    }

    /// Stages a client frozen mid-work, for tests: the `n`-th write handled from
    /// now on (past its faults and the token) and every write after it wait,
    /// unhandled, until [`Sandbox::release_writes`]; reads go on. A client killed
    /// meanwhile leaves exactly the writes before the `n`-th made, however slowly
    /// the test that kills it is scheduled: its waiting writes are dropped with
    /// its connections, never handled. [`Sandbox::writes_held`] says how many
    /// wait. `n` = 0 is taken as 1.
    pub fn hold_writes_from(&self, n: u64) {
        *self
            .shared
            .hold_after
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(n.max(1) - 1);
        self.shared.hold_staged.store(true, Ordering::SeqCst);
    }

    /// How many writes wait for [`Sandbox::release_writes`] now.
    pub fn writes_held(&self) -> u64 {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Ends a hold ([`Sandbox::hold_writes_from`]), come or still staged: the
    /// waiting writes are handled, and no more wait.
    pub fn release_writes(&self) {
        *self
            .shared
            .hold_after
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self.shared.hold_staged.store(false, Ordering::SeqCst);
        self.shared.holding.send_replace(false);
    }

    /// Stages a stale `groups` (RFC 7643 §4.1.2), for tests: from now on the
    /// User `user`'s `groups` names each of `groups` (group ids) as a direct
    /// membership, whether the group's `members` hold it or not, as a provider
    /// that does not update a User's `groups` when it leaves a group. The
    /// groups' members are served as they are.
    pub fn name_stale_groups(&self, user: &str, groups: &[&str]) {
        self.shared.store().name_stale_groups(user, groups);
    }

    /// Replaces the bearer token while serving: clients holding the old one are
    /// answered 401 from the next request on, as after a token is revoked.
    pub fn set_token(&self, token: &str) {
        *self
            .shared
            .token
            .write()
            .unwrap_or_else(PoisonError::into_inner) = token.to_owned();
    }

    /// Changes faults at run time; the PRNG restarts from `faults.seed`.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.store().set_members_cap(faults.members_cap);
        *self
            .shared
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = FaultState::new(faults);
    }

    /// Stops accepting, lets in-flight requests finish (idle keep-alive connections
    /// are closed), and gives up waiting after five seconds.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Reads a seed file: `{"users": [SCIM User…], "groups": [SCIM Group…]}`, the shape
/// of a SCIM `ListResponse.Resources`, so a workspace exported over SCIM can be
/// rehearsed against. Resources without an `id` get `seed-user-N`/`seed-group-N`;
/// numeric ids are kept, as strings. What the workspace could not hold (two records
/// with one id or userName, a member that is no user of the file) is refused,
/// naming the file and both records. Groups may share a name.
pub fn load_seed(path: &Path) -> Result<WorkspaceSnapshot, SandboxError> {
    let text = std::fs::read_to_string(path).map_err(|source| SandboxError::SeedRead {
        path: path.to_owned(),
        source,
    })?;
    let value: Value = serde_json::from_str(&text).map_err(|e| SandboxError::SeedFile {
        path: path.to_owned(),
        message: format!("not JSON: {e}"),
    })?;
    store::seed_from_json(&value).map_err(|message| SandboxError::SeedFile {
        path: path.to_owned(),
        message,
    })
}

// ---- HTTP ----

fn json_response(status: u16, body: &Value) -> Response {
    bytes_response(status, serde_json::to_vec(body).unwrap_or_default())
}

fn bytes_response(status: u16, bytes: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    response
}

fn error_response(e: &ScimError) -> Response {
    json_response(e.status, &e.body())
}

fn resource_response(status: u16, r: Rendered, location: bool) -> Response {
    let mut response = bytes_response(status, r.json);
    if let Ok(v) = HeaderValue::from_str(&r.etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    if location && let Ok(v) = HeaderValue::from_str(&r.location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// Percent-decodes a path segment (our client encodes ids with `%XX`).
fn decode_segment(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, given)| {
            scheme.eq_ignore_ascii_case("bearer") && given.trim().as_bytes() == token.as_bytes()
        })
}

/// Whether the request has one `Host` header and it is `localhost` or a loopback
/// IPv4 or IPv6 literal, with or without a port: the daemon's rule for `/status`
/// (`daemon::http`, private there). The sandbox only ever listens on loopback, so
/// every client that means to reach it names it so; a missing Host (HTTP/1.0) is
/// refused as well, as no browser sends one and so none of our clients omits it.
fn host_is_loopback(headers: &HeaderMap) -> bool {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return false;
    };
    host.to_str().is_ok_and(crate::http::host_is_loopback)
}

/// The query of a list request, and its `cursor` parameter if it has one.
fn list_query(uri: &Uri, max_results: usize) -> Result<(ListQuery, Option<String>), ScimError> {
    let mut q = ListQuery {
        start_index: 1,
        count: max_results,
        filter: None,
        excluded: Vec::new(),
        by_cursor: false,
        after: None,
    };
    let mut cursor = None;
    let number = |k: &str, v: &str| -> Result<i64, ScimError> {
        v.trim().parse::<i64>().map_err(|_| {
            ScimError::bad("invalidValue", format!("{k} must be an integer, not {v:?}"))
        })
    };
    for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match k.to_ascii_lowercase().as_str() {
            // RFC 7644 §3.4.2.4: startIndex below 1 is 1; count below 0 is 0.
            "startindex" => q.start_index = usize::try_from(number(&k, &v)?.max(1)).unwrap_or(1),
            "count" => {
                q.count = usize::try_from(number(&k, &v)?.max(0))
                    .unwrap_or(0)
                    .min(max_results);
            }
            "filter" if !v.trim().is_empty() => q.filter = Some(v.into_owned()),
            "cursor" => cursor = Some(v.into_owned()),
            "excludedattributes" => {
                q.excluded = v
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
            }
            _ => {}
        }
    }
    Ok((q, cursor))
}

/// A list request as the sandbox pages it: by index, or by cursor (see
/// [`SandboxPaging`]).
fn list_request(shared: &Shared, uri: &Uri, now_ms: u64) -> Result<ListQuery, ScimError> {
    let (mut q, cursor) = list_query(uri, shared.max_results)?;
    let by_cursor = match shared.paging {
        SandboxPaging::Index => false,
        SandboxPaging::Cursor => true,
        SandboxPaging::Both => cursor.is_some(),
    };
    if !by_cursor {
        return Ok(q);
    }
    if q.count == 0 {
        return Err(ScimError::bad(
            "invalidCount",
            "count must be at least 1 when paging by cursor",
        ));
    }
    q.by_cursor = true;
    q.after = match cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(open_cursor(c, shared.cursor_timeout, now_ms)?),
    };
    Ok(q)
}

/// `{issued, ms since the epoch, hex}.{the id, hex}`: RFC 3986 unreserved only.
fn seal_cursor(after: &str, now_ms: u64) -> String {
    let mut cursor = format!("{now_ms:x}.");
    for b in after.bytes() {
        cursor.push_str(&format!("{b:02x}"));
    }
    cursor
}

fn open_cursor(cursor: &str, timeout: Option<Duration>, now_ms: u64) -> Result<String, ScimError> {
    let invalid = || {
        ScimError::bad(
            "invalidCursor",
            format!("{cursor:?} is not a cursor this server handed out"),
        )
    };
    let (issued, id) = cursor.split_once('.').ok_or_else(invalid)?;
    let issued = u64::from_str_radix(issued, 16).map_err(|_| invalid())?;
    if id.is_empty() || id.len() % 2 != 0 || !id.is_ascii() {
        return Err(invalid());
    }
    let bytes = (0..id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&id[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid())?;
    let id = String::from_utf8(bytes).map_err(|_| invalid())?;
    if let Some(timeout) = timeout {
        let age = now_ms.saturating_sub(issued);
        if u128::from(age) >= timeout.as_millis() {
            return Err(ScimError::bad(
                "expiredCursor",
                format!(
                    "the cursor is {age} ms old; cursors last {} ms (cursorTimeout)",
                    timeout.as_millis()
                ),
            ));
        }
    }
    Ok(id)
}

/// Gives a page by cursor with more to come its `nextCursor`.
fn seal_next(list: &mut store::ListPage, now_ms: u64) {
    if let Some(after) = list.more_after.take() {
        list.next_cursor = Some(seal_cursor(&after, now_ms));
    }
}

fn json_body(body: &Bytes) -> Result<Value, ScimError> {
    serde_json::from_slice(body)
        .map_err(|e| ScimError::bad("invalidSyntax", format!("the body is not JSON: {e}")))
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let _in_progress = InProgress::new(&shared.in_progress);
    let write = matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let (latency, fault, retry_after) = {
        let mut faults = shared.faults.lock().unwrap_or_else(PoisonError::into_inner);
        if faults.faults.writes_only && !write {
            (faults.faults.latency, None, 0)
        } else {
            faults.draw()
        }
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Some(Fault::Reset) => {
            shared.resets.fetch_add(1, Ordering::Relaxed);
            return dropped();
        }
        Some(Fault::TooMany) => {
            shared.faults_429.fetch_add(1, Ordering::Relaxed);
            let mut response = error_response(&ScimError::new(
                429,
                None,
                "sandbox fault: too many requests",
            ));
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            return response;
        }
        Some(Fault::Unavailable) => {
            shared.faults_5xx.fetch_add(1, Ordering::Relaxed);
            return error_response(&ScimError::new(
                503,
                None,
                "sandbox fault: service unavailable",
            ));
        }
        None => {}
    }
    // Before the token: a request for another name may come from a web page on this
    // machine whose DNS name was rebound to 127.0.0.1, and a sandbox may hold a copy
    // of a real workspace. Its Host is that name, so it is refused whatever it sends.
    if !host_is_loopback(&headers) {
        return error_response(&ScimError::new(
            421,
            None,
            "the sandbox answers only Host: localhost or a loopback address",
        ));
    }
    let authorized = authorized(
        &headers,
        &shared.token.read().unwrap_or_else(PoisonError::into_inner),
    );
    if !authorized {
        let mut response = error_response(&ScimError::new(
            401,
            None,
            "a valid bearer token is required",
        ));
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"scim\""),
        );
        return response;
    }
    if write {
        shared.wait_if_held().await;
    }
    let response = match route(&shared, &method, &uri, &headers, &body) {
        Ok(response) => response,
        Err(e) => error_response(&e),
    };
    if write && response.status().is_success() {
        shared.writes.fetch_add(1, Ordering::Relaxed);
    }
    if shared.recording.load(Ordering::Relaxed)
        && let Some(seen) = shared
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
    {
        seen.push(SeenRequest {
            method: method.to_string(),
            path: uri
                .path()
                .strip_prefix(PREFIX)
                .unwrap_or(uri.path())
                .to_owned(),
            status: response.status().as_u16(),
            body: if write {
                serde_json::from_slice(&body).unwrap_or(Value::Null)
            } else {
                Value::Null
            },
        });
    }
    if shared.loses_answer(&method, &uri) || shared.cuts_answer(write) {
        return dropped();
    }
    response
}

/// A response whose body fails before its first byte: hyper aborts the
/// connection without the response head, and the client sees it dropped.
fn dropped() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "sandbox fault: connection dropped",
        ))
    });
    Response::new(Body::from_stream(failing))
}

/// The `first_page_only` fault: an unfiltered listing claims its first page is all.
fn first_page_only(shared: &Shared, q: &ListQuery, list: &mut store::ListPage) {
    let on = shared
        .faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .faults
        .first_page_only;
    if !on || q.filter.is_some() || q.by_cursor {
        return;
    }
    if q.start_index > 1 {
        list.clear();
    }
    list.total = list.items;
}

/// Dispatches an authorized request. Synchronous: the store lock never meets an await.
fn route(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ScimError> {
    let path = uri.path();
    let rest = path
        .strip_prefix(PREFIX)
        .ok_or_else(|| ScimError::new(404, None, format!("no endpoint {path}")))?;
    let segments: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode_segment)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let now = chrono::Utc::now();
    // When cursors are sealed and opened (`cursor_timeout`).
    let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    let if_match = if_match(headers);
    let if_match = if_match.as_deref();
    let not_allowed = || ScimError::new(405, None, format!("{method} is not supported on {path}"));
    let m = method.clone();
    if m == Method::PATCH {
        shared.patches.fetch_add(1, Ordering::Relaxed);
        if !shared.patch_supported.load(Ordering::Relaxed) {
            return Err(ScimError::new(
                501,
                None,
                "PATCH is not supported: replace the resource with PUT",
            ));
        }
    }
    if m == Method::PUT {
        shared.puts.fetch_add(1, Ordering::Relaxed);
    }
    match segments.as_slice() {
        ["ServiceProviderConfig"] if m == Method::GET => Ok(json_response(
            200,
            &discovery::service_provider_config(
                &shared.base,
                shared.max_results,
                shared.paging,
                shared.cursor_timeout,
                shared.patch_supported.load(Ordering::Relaxed),
            ),
        )),
        ["ResourceTypes"] if m == Method::GET => Ok(json_response(
            200,
            &discovery::list(discovery::resource_types(&shared.base)),
        )),
        ["ResourceTypes", name] if m == Method::GET => discovery::resource_types(&shared.base)
            .into_iter()
            .find(|r| r["id"].as_str() == Some(name))
            .map(|r| json_response(200, &r))
            .ok_or_else(|| ScimError::not_found("ResourceType", name)),
        ["Schemas"] if m == Method::GET => Ok(json_response(
            200,
            &discovery::list(discovery::schemas(&shared.base)),
        )),
        ["Schemas", id] if m == Method::GET => discovery::schemas(&shared.base)
            .into_iter()
            .find(|r| r["id"].as_str() == Some(id))
            .map(|r| json_response(200, &r))
            .ok_or_else(|| ScimError::not_found("Schema", id)),
        ["Users"] => match m {
            Method::GET => {
                let q = list_request(shared, uri, now_ms)?;
                // Bind first: the guard goes before the envelope is written.
                let mut list = shared.store_read().list_users(&q)?;
                first_page_only(shared, &q, &mut list);
                seal_next(&mut list, now_ms);
                Ok(bytes_response(200, list.into_json()))
            }
            Method::POST => {
                let v = json_body(body)?;
                let r = shared.store().create_user(&v, now)?;
                Ok(resource_response(201, r, true))
            }
            _ => Err(not_allowed()),
        },
        ["Users", id] => match m {
            Method::GET => {
                let excluded = list_query(uri, shared.max_results)?.0.excluded;
                let r = store::without_excluded(shared.store_read().get_user(id)?, &excluded)?;
                shared.change_after_read("Users", id, now);
                Ok(resource_response(200, r, false))
            }
            Method::PUT => {
                let v = json_body(body)?;
                let r = shared.store().replace_user(id, &v, if_match, now)?;
                Ok(resource_response(200, r, false))
            }
            Method::PATCH => {
                let v = json_body(body)?;
                let r = shared.store().patch_user(id, &v, if_match, now)?;
                Ok(resource_response(200, r, false))
            }
            Method::DELETE => {
                shared.store().delete_user(id, if_match, now)?;
                Ok(empty(204))
            }
            _ => Err(not_allowed()),
        },
        ["Groups"] => match m {
            Method::GET => {
                let q = list_request(shared, uri, now_ms)?;
                let mut list = shared.store_read().list_groups(&q)?;
                first_page_only(shared, &q, &mut list);
                seal_next(&mut list, now_ms);
                Ok(bytes_response(200, list.into_json()))
            }
            Method::POST => {
                let v = json_body(body)?;
                let r = shared.store().create_group(&v, now)?;
                Ok(resource_response(201, r, true))
            }
            _ => Err(not_allowed()),
        },
        ["Groups", id] => {
            let excluded = list_query(uri, shared.max_results)?.0.excluded;
            let with_members = !excluded.iter().any(|e| e.eq_ignore_ascii_case("members"));
            match m {
                Method::GET => {
                    let r = shared.store_read().get_group(id, with_members)?;
                    let r = store::without_excluded(r, &excluded)?;
                    shared.change_after_read("Groups", id, now);
                    Ok(resource_response(200, r, false))
                }
                Method::PUT => {
                    let v = json_body(body)?;
                    let r = shared.store().replace_group(id, &v, if_match, now)?;
                    Ok(resource_response(200, r, false))
                }
                Method::PATCH => {
                    let v = json_body(body)?;
                    let r = shared
                        .store()
                        .patch_group(id, &v, if_match, now, with_members)?;
                    Ok(resource_response(200, r, false))
                }
                Method::DELETE => {
                    shared.store().delete_group(id, if_match, now)?;
                    Ok(empty(204))
                }
                _ => Err(not_allowed()),
            }
        }
        // RFC 7644 §3.11 and §3.7: a provider without `/Me` or bulk answers 501,
        // and `/ServiceProviderConfig` says `bulk.supported: false`.
        ["Me", ..] => Err(ScimError::new(
            501,
            None,
            "/Me is not supported: read the User by its id under /Users",
        )),
        ["Bulk", ..] => Err(ScimError::new(
            501,
            None,
            "bulk operations are not supported (bulk.supported is false): send each \
             request on its own",
        )),
        _ => Err(ScimError::new(404, None, format!("no endpoint {path}"))),
    }
}

fn empty(status: u16) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::NO_CONTENT);
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn splitmix_is_reproducible_and_uniform_enough() {
        let mut a = SplitMix64(7);
        let mut b = SplitMix64(7);
        let xs: Vec<f64> = (0..1000).map(|_| a.next_f64()).collect();
        let ys: Vec<f64> = (0..1000).map(|_| b.next_f64()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let low = xs.iter().filter(|x| **x < 0.3).count();
        assert!((200..400).contains(&low), "{low}");
    }

    #[test]
    fn fault_shares_follow_the_rates() {
        let mut state = FaultState::new(Faults {
            rate_429: 0.2,
            rate_5xx: 0.1,
            rate_reset: 0.1,
            seed: 3,
            ..Faults::default()
        });
        let draws: Vec<Option<Fault>> = (0..10_000).map(|_| state.draw().1).collect();
        let count = |f| draws.iter().filter(|d| **d == Some(f)).count();
        assert!((1800..2200).contains(&count(Fault::TooMany)));
        assert!((800..1200).contains(&count(Fault::Unavailable)));
        assert!((800..1200).contains(&count(Fault::Reset)));
        let mut none = FaultState::new(Faults::default());
        assert!((0..100).all(|_| none.draw().1.is_none()));
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(decode_segment("a%20b%2Fc"), "a b/c");
        assert_eq!(decode_segment("100%"), "100%");
    }
}
