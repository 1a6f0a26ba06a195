//! What the directory connectors share. Every one with a credential (Okta, Entra,
//! LDAP, SCIM) takes it as a [`Secret`], read at use. The Okta and Entra connectors
//! also share one HTTP transport (concurrency permit, optional request-rate limit,
//! per-request timeout, request counters, and a pause after a 429 or 503 with
//! `Retry-After` that holds every request of the connector, as the workspace
//! client's does, and after a 429 without it for the refused request's backoff),
//! OAuth 2.0 client-credentials tokens
//! cached until shortly before they expire, and error construction that never
//! carries a secret; the SCIM directory talks through the workspace's client, and
//! LDAP through its own connection. A web page that answers instead of the
//! provider's JSON is named by its title; one that says 401 or 403 is a
//! proxy's, a firewall's or a WAF's in front of the provider, and the error says
//! to check that, naming the provider's address ([`check_in_front`]), rather
//! than the credential (the SCIM directory says the same of its client's errors).
//!
//! Both also turn what they read into a snapshot the same way
//! ([`groups_to_read`], [`assemble_snapshot`], [`names_of_interest`]).
//!
//! Retries go through [`crate::retry::retry`]; each connector wraps its attempts in
//! it, because what to do before an attempt (Okta's rate-limit pacing, a token
//! refresh after a 401) is provider-specific. A token request is part of the
//! attempt that needs the token, so it is retried there and nowhere else.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::DefaultClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::{DirectoryError, GroupInterest};
use crate::http::encode_component;
use crate::model::{DirectorySnapshot, Identity};
use crate::retry::RetryPolicy;

/// How much of a provider's error message goes into an error.
const MAX_DETAIL_CHARS: usize = 300;

/// A credential given inline in the configuration or as a file read at use, so a
/// rotated file is picked up by the next run. Prints as `[redacted]` (inline) or
/// the file's path.
#[derive(Clone)]
pub enum Secret {
    Inline(SecretString),
    File {
        /// The configuration key, for errors: `directory.token_file`.
        key: &'static str,
        path: PathBuf,
    },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("[redacted]"),
            Secret::File { path, .. } => write!(f, "file {}", path.display()),
        }
    }
}

/// The password a password file holds: its text without the line break(s) at its
/// end (LF or CRLF, as editors and `echo` leave them), every other character kept,
/// so a password may begin or end with a space as it may inline (an AD bind
/// password trimmed of its space would fail, and repeated failures lock the
/// account). `None` when nothing but whitespace is left, which is refused like an
/// empty inline secret. A byte order mark at the start (Notepad, PowerShell's
/// `Set-Content -Encoding UTF8`) is no part of it: sent, it is a wrong password.
pub fn secret_in_file(text: &str) -> Option<&str> {
    let secret = without_bom(text).trim_end_matches(['\r', '\n']);
    (!secret.trim().is_empty()).then_some(secret)
}

/// The token (or client secret) a file holds, without surrounding whitespace: no
/// token has any, and one pasted with a stray space would otherwise be sent with
/// it (a trigger token's never matches, as HTTP trims header values); nor a
/// byte order mark, which Windows editors put first and which is not whitespace:
/// kept, the token is refused with a 401 that sends the operator looking at a
/// token that is right.
pub fn token_in_file(text: &str) -> Option<&str> {
    Some(without_bom(text).trim()).filter(|token| !token.is_empty())
}

/// `text` without the UTF-8 byte order mark (U+FEFF) a file may start with.
fn without_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

impl Secret {
    /// `key` and, for a file, its path (`directory.private_key_file /etc/…`): how
    /// an error about what the secret holds names it, never showing it.
    pub fn named(&self, key: &str) -> String {
        match self {
            Secret::Inline(_) => key.to_owned(),
            Secret::File { path, .. } => format!("{key} {}", path.display()),
        }
    }

    /// The secret: from a `*password_file`, [`secret_in_file`]; from any other
    /// file (tokens, client secrets, keys), [`token_in_file`]. A `*token_file`'s
    /// token is refused as [`crate::config::token_mistake`] finds it wrong (`SSWS`
    /// copied with an Okta token would be sent as `SSWS SSWS …`); a
    /// `*client_secret_file`'s as [`crate::config::client_secret_mistake`] does.
    pub fn read(&self) -> Result<SecretString, DirectoryError> {
        match self {
            Secret::Inline(secret) => Ok(secret.clone()),
            Secret::File { key, path } => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| DirectoryError::SecretFile {
                        key,
                        file: path.clone(),
                        source,
                    })?;
                let secret = if key.ends_with("password_file") {
                    secret_in_file(&text)
                } else {
                    token_in_file(&text)
                };
                let secret = secret.ok_or_else(|| {
                    DirectoryError::Settings(format!("{key} {} is empty", path.display()))
                })?;
                if key.ends_with("token_file")
                    && let Some(mistake) = crate::config::token_mistake(secret)
                {
                    return Err(DirectoryError::Settings(format!(
                        "{key} {}: the token {mistake}",
                        path.display()
                    )));
                }
                if key.ends_with("client_secret_file")
                    && let Some(mistake) = crate::config::client_secret_mistake(secret)
                {
                    return Err(DirectoryError::Settings(format!(
                        "{key} {}: the client secret {mistake}",
                        path.display()
                    )));
                }
                Ok(SecretString::from(secret.to_owned()))
            }
        }
    }
}

/// Requests a connector made, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteStats {
    /// HTTP attempts (retries and token requests included).
    pub requests: u64,
    /// Attempts that were retries of a transient failure.
    pub retries: u64,
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, NoOpMiddleware>;

/// An HTTP answer of any status.
pub(crate) struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
    /// Scheme, host and port the request went to (`https://acme.okta.com`):
    /// what a block page's 401 or 403 tells the operator to look in front of.
    pub origin: String,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The parsed JSON body of a success.
    pub fn json(&self, endpoint: &str) -> Result<Value, DirectoryError> {
        serde_json::from_str(&self.body)
            .map_err(|e| self.not_json(endpoint, format!("body is not JSON: {e}")))
    }

    /// The error for a success whose body could not be read as expected (`what`),
    /// or, when it is a web page, for what answered instead of the provider.
    pub fn not_json(&self, endpoint: &str, what: String) -> DirectoryError {
        DirectoryError::Malformed {
            endpoint: endpoint.to_owned(),
            what: html_title(self).map_or(what, web_page),
        }
    }
}

/// What to say of a web page (its `<title>`) that answered instead of the
/// provider's API, which answers in JSON, errors too.
fn web_page(title: &str) -> String {
    format!(
        "an HTML page{}, not the provider's JSON: something other than the provider \
         answered (a proxy that wants a login or blocks the host, or a directory.url \
         that reaches a website): check directory.url, and HTTPS_PROXY/NO_PROXY for \
         this service",
        match title {
            "" => String::new(),
            title => format!(" ({title:?})"),
        }
    )
}

/// What to say of a web page (its `<title>`) that answered 401 or 403 from
/// `origin`: the providers answer in JSON, refusals too, so a proxy, a firewall
/// or a WAF in front of the provider refused the request (a block page, a
/// sign-in page), and no credential or permission would change it.
fn refused_in_front(title: &str, origin: &str) -> String {
    format!(
        "an HTML page{}, not the provider's JSON: a page from something in front of {origin} \
         (a proxy's, firewall's or WAF's block or sign-in page), {}",
        match title {
            "" => String::new(),
            title => format!(" ({title:?})"),
        },
        check_in_front(origin)
    )
}

/// What to check after a 401 or 403 a web page said for the provider at
/// `origin` (the workspace's `CHECK_IN_FRONT`, for a directory).
pub(crate) fn check_in_front(origin: &str) -> String {
    format!(
        "so not the credential: check the proxy, firewall or WAF in front of {origin} (its \
         rules and allow-list for this machine's address), and HTTPS_PROXY/NO_PROXY"
    )
}

/// The `<title>` of `reply` when it is a web page ([`crate::http::html_title`]).
fn html_title(reply: &Reply) -> Option<&str> {
    let content_type = reply
        .headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    crate::http::html_title(content_type, &reply.body)
}

pub(crate) struct Transport {
    http: reqwest::Client,
    permits: Semaphore,
    limiter: Option<Limiter>,
    timeout: Duration,
    /// The most one answer's body may hold.
    max_body_bytes: usize,
    pub retry: RetryPolicy,
    /// Set by a 429 or 503 with `Retry-After`: no request leaves before then.
    /// Microsoft Graph throttles the app in the tenant, not the request, and asks
    /// that nothing be sent until `Retry-After` has passed; the reads running
    /// concurrently (`max_concurrency`) would otherwise each be refused in turn,
    /// prolonging the throttling and spending their own retries.
    paused_until: crate::http::ProviderPause,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// The certificates of `directory.ca_file`, checked ([`crate::http::read_ca_file`]).
pub fn ca_pem(file: Option<&std::path::Path>) -> Result<Option<Vec<u8>>, DirectoryError> {
    use crate::http::CaFileError;
    file.map(|file| {
        crate::http::read_ca_file(file).map_err(|e| match e {
            CaFileError::Unreadable { file, source } => DirectoryError::SecretFile {
                key: "directory.ca_file",
                file,
                source,
            },
            other => DirectoryError::Settings(format!("directory.ca_file {other}")),
        })
    })
    .transpose()
}

impl Transport {
    /// `plain_http`: a URL of the connection is plain `http://`, and the client
    /// then never uses a proxy ([`crate::http::client`]).
    pub fn new(
        timeout: Duration,
        max_concurrency: usize,
        requests_per_second: u32,
        retry: RetryPolicy,
        max_body_bytes: usize,
        plain_http: bool,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Transport, DirectoryError> {
        // The configuration refuses more than 1000; a caller building the
        // settings itself gets an error here rather than the semaphore's panic.
        if max_concurrency > Semaphore::MAX_PERMITS {
            return Err(DirectoryError::Settings(format!(
                "max_concurrency must be at most {}",
                Semaphore::MAX_PERMITS
            )));
        }
        let ca_pem = ca_pem(ca_file)?;
        let http = crate::http::client(timeout, plain_http, ca_pem.as_deref())
            .map_err(|e| DirectoryError::Settings(format!("HTTP client: {e}")))?;
        let limiter = NonZeroU32::new(requests_per_second).map(|rps| {
            RateLimiter::direct_with_clock(Quota::per_second(rps), DefaultClock::default())
        });
        Ok(Transport {
            http,
            permits: Semaphore::new(max_concurrency.max(1)),
            limiter,
            timeout,
            max_body_bytes,
            retry,
            paused_until: crate::http::ProviderPause::default(),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn stats(&self) -> RemoteStats {
        RemoteStats {
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    /// Counts a retry of the request to `endpoint` and tells `log` of it.
    ///
    /// A 429 that says nothing of when to come back (no `Retry-After`, and for
    /// Okta no `X-Rate-Limit-Reset`: a proxy's, or a limit whose headers were
    /// stripped) pauses every request of the connector for the refused request's
    /// own backoff `delay`, as a `Retry-After` of that length would: the limit is
    /// the app's or the org's, not the request's, and the concurrent reads would
    /// otherwise go on into it, each refused in turn and spending its retries.
    pub fn note_retry(
        &self,
        log: &mut crate::retry::RetryLog,
        endpoint: &str,
        error: &DirectoryError,
        delay: Duration,
    ) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        if error.status() == Some(429) && crate::retry::Transient::retry_after(error).is_none() {
            self.paused_until
                .pause_for(delay, "the directory", endpoint, 429);
        }
        log.retrying(endpoint, &self.retry, error, delay);
    }

    /// Pauses every request of the connector for `delay`, as a `Retry-After` of
    /// that length would: for a limit the provider says in its own way (Okta's
    /// org-wide concurrency limit).
    pub fn pause(&self, delay: Duration, endpoint: &str, status: u16) {
        self.paused_until
            .pause_for(delay, "the directory", endpoint, status);
    }

    /// One attempt: permit, the provider's last pause, rate limit, timeout. Any
    /// status is an answer; a 429 or 503 with `Retry-After` pauses every request
    /// of this connector for that long (at most `retry.max_retry_after`).
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
        endpoint: &str,
    ) -> Result<Reply, DirectoryError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| DirectoryError::Settings("connector is shut down".to_owned()))?;
        self.paused_until.wait_out().await;
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let transport = |e: reqwest::Error| {
            let (message, transient) = crate::http::describe_failure(&e);
            DirectoryError::Transport {
                endpoint: endpoint.to_owned(),
                message,
                transient,
            }
        };
        let response = request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let origin = response.url().origin().ascii_serialization();
        if matches!(status, 429 | 503)
            && let Some(asked) = retry_after(&headers)
        {
            self.paused_until.pause_for(
                asked.min(self.retry.max_retry_after),
                "the directory",
                endpoint,
                status,
            );
        }
        let body = crate::http::body_text(response, self.max_body_bytes)
            .await
            .map_err(|e| match e {
                crate::http::BodyError::Read(e) => transport(e),
                // Not transient: asked again, it would be as large.
                too_large @ crate::http::BodyError::TooLarge { .. } => DirectoryError::Malformed {
                    endpoint: endpoint.to_owned(),
                    what: too_large.to_string(),
                },
            })?;
        Ok(Reply {
            status,
            headers,
            body,
            origin,
        })
    }
}

/// The `Retry-After` header as a delay ([`crate::http::retry_after`]).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    crate::http::retry_after(headers)
}

/// An error for a non-success answer. `code` and `detail` come from the provider's
/// error body; every secret in `secrets` is scrubbed from the detail (a provider
/// echoing a credential must not smuggle it into logs).
pub(crate) fn status_error(
    endpoint: &str,
    reply: &Reply,
    code: Option<String>,
    detail: String,
    retry_after: Option<Duration>,
    secrets: &[&str],
) -> DirectoryError {
    // A web page is no provider's error: a proxy's 403 block page taken for
    // Okta's or Graph's sent the operator after an admin role or a permission,
    // and one's 401 after the credential.
    let redirect = crate::http::redirect_detail(reply.status, &reply.headers);
    let page = match redirect {
        Some(_) => None,
        None => html_title(reply).map(|title| match reply.status {
            401 | 403 => refused_in_front(title, &reply.origin),
            _ => web_page(title),
        }),
    };
    // What is said of a page is not cut: it is seatwarden's (the title is at
    // most 100 bytes), and ends with what to check.
    let whole = page.is_some();
    let mut detail = redirect.or(page).unwrap_or(detail);
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        detail = detail.replace(secret, "[redacted]");
    }
    if !whole && detail.chars().count() > MAX_DETAIL_CHARS {
        detail = detail.chars().take(MAX_DETAIL_CHARS).collect::<String>() + "…";
    }
    DirectoryError::Status {
        endpoint: endpoint.to_owned(),
        status: reply.status,
        code,
        detail,
        retry_after,
    }
}

/// A provider's identifiers of a refused request (`name value` pairs, those
/// without a value left out) on one line, each value at most 64 characters.
pub(super) fn reference_text(parts: &[(&str, Option<&str>)]) -> String {
    parts
        .iter()
        .filter_map(|(name, value)| {
            value.map(|v| {
                // One line, and no longer than an identifier or a date needs.
                let v: String = v.chars().filter(|c| !c.is_control()).take(64).collect();
                format!("{name} {v}")
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `error` with its provider detail rewritten by `rewrite` (a status error only).
pub(super) fn with_detail(
    error: DirectoryError,
    rewrite: impl FnOnce(&str) -> String,
) -> DirectoryError {
    match error {
        DirectoryError::Status {
            endpoint,
            status,
            code,
            detail,
            retry_after,
        } => DirectoryError::Status {
            endpoint,
            status,
            code,
            detail: rewrite(&detail),
            retry_after,
        },
        other => other,
    }
}

/// The start of a body that is not the provider's error shape.
pub(crate) fn body_excerpt(body: &str) -> String {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        "(empty body)".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// `application/x-www-form-urlencoded` for a token request.
pub(crate) fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A URL's path and query, for naming an endpoint in errors without the host.
pub(crate) fn endpoint_of(method: &str, url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match u.query() {
            Some(q) => format!("{method} {}?{q}", u.path()),
            None => format!("{method} {}", u.path()),
        },
        Err(_) => format!("{method} {url}"),
    }
}

/// True when `next` is on the same scheme, host and port as `base`: paging links
/// are followed with credentials, so they must not lead elsewhere.
pub(crate) fn same_origin(base: &str, next: &str) -> bool {
    match (url::Url::parse(base), url::Url::parse(next)) {
        (Ok(base), Ok(next)) => next.origin() == base.origin(),
        _ => false,
    }
}

/// The pages a listing has read, by URL as `url` parses it (host case, default
/// port and the like aside), the first page's among them: a next link back to
/// any, the first too, would read it again, and the listing loop.
#[derive(Default)]
pub(crate) struct PagesRead(HashSet<String>);

impl PagesRead {
    /// A listing that starts at `first`.
    pub(crate) fn starting_at(first: &str) -> PagesRead {
        PagesRead(HashSet::from([page_key(first)]))
    }

    /// Takes note of `next`; false when it was read already.
    pub(crate) fn is_new(&mut self, next: &str) -> bool {
        self.0.insert(page_key(next))
    }
}

fn page_key(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| url.to_owned(), String::from)
}

/// An access token and when to stop using it.
struct CachedToken {
    token: SecretString,
    refresh_at: tokio::time::Instant,
}

/// An OAuth 2.0 access token, fetched once and reused until shortly before it
/// expires (or until the API rejects it).
#[derive(Default)]
pub(crate) struct TokenCache {
    current: tokio::sync::Mutex<Option<CachedToken>>,
}

impl TokenCache {
    /// The cached token, or a fresh one from `fetch` (token, lifetime). Concurrent
    /// callers wait for one fetch rather than each making their own.
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<SecretString, DirectoryError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(SecretString, Duration), DirectoryError>>,
    {
        let mut current = self.current.lock().await;
        let now = tokio::time::Instant::now();
        if let Some(cached) = current.as_ref().filter(|c| now < c.refresh_at) {
            return Ok(cached.token.clone());
        }
        let (token, lifetime) = fetch().await?;
        // An `expires_in` no issuer means (years) must not overflow the clock; a
        // day is longer than any access token lives.
        let lifetime = lifetime.min(Duration::from_secs(24 * 3600));
        // Refresh five minutes early (or at half-life for short-lived tokens), so
        // no request leaves with a token about to expire.
        let margin = Duration::from_secs(300).min(lifetime / 2);
        *current = Some(CachedToken {
            token: token.clone(),
            refresh_at: tokio::time::Instant::now() + lifetime.saturating_sub(margin),
        });
        Ok(token)
    }

    /// Drops `stale` after the API rejected it (revoked, or expired early), unless
    /// another task has already replaced it.
    pub async fn invalidate(&self, stale: &SecretString) {
        let mut current = self.current.lock().await;
        if current
            .as_ref()
            .is_some_and(|c| c.token.expose_secret() == stale.expose_secret())
        {
            *current = None;
        }
    }
}

/// Sends one token request (client credentials) with `form`, once; any status is
/// an answer, read by [`token_from`] (Okta paces by other headers than
/// `Retry-After`, its `X-Rate-Limit-Reset`; Entra adds the identity platform's
/// correlation id to a refusal).
///
/// Not retried here: a token is fetched inside a connector's retried attempt, and
/// a retry loop here as well made a token endpoint that answers 503 take
/// attempts² requests for one API call (49 under the default policy).
pub(crate) async fn request_token(
    transport: &Transport,
    token_url: &str,
    form: &[(&str, &str)],
) -> Result<Reply, DirectoryError> {
    request_token_with(transport, token_url, form, &[]).await
}

/// [`request_token`] with more `headers` (Okta's `DPoP` proof).
pub(crate) async fn request_token_with(
    transport: &Transport,
    token_url: &str,
    form: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Result<Reply, DirectoryError> {
    let endpoint = endpoint_of("POST", token_url);
    let body = form_body(form);
    let mut request = transport
        .http()
        .post(token_url)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(reqwest::header::ACCEPT, "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    transport.send(request, &endpoint).await
}

/// The token and its lifetime in the token endpoint's `reply`, or an error whose
/// retry waits at least `wait`; `secrets` never appear in it.
pub(crate) fn token_from(
    token_url: &str,
    reply: &Reply,
    secrets: &[&str],
    wait: Option<Duration>,
) -> Result<(SecretString, Duration), DirectoryError> {
    let endpoint = endpoint_of("POST", token_url);
    if !reply.is_success() {
        // RFC 6749 §5.2: {"error": "invalid_client", "error_description": "…"}.
        let parsed: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
        let code = parsed
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let detail = parsed
            .get("error_description")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| body_excerpt(&reply.body));
        return Err(status_error(&endpoint, reply, code, detail, wait, secrets));
    }
    let value = reply.json(&endpoint)?;
    let token = value
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| DirectoryError::Malformed {
            endpoint: endpoint.clone(),
            what: "no access_token in the token response".to_owned(),
        })?;
    // RFC 6749 makes expires_in a number; some servers send a string.
    let lifetime = match value.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .unwrap_or(3600);
    Ok((
        SecretString::from(token.to_owned()),
        Duration::from_secs(lifetime),
    ))
}

/// A string field `endpoint`'s items must carry, non-empty.
pub(super) fn required_str<'a>(
    v: &'a Value,
    field: &str,
    endpoint: &str,
) -> Result<&'a str, DirectoryError> {
    v.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| DirectoryError::Malformed {
            endpoint: endpoint.to_owned(),
            what: format!("an item has no {field:?}"),
        })
}

/// The group names a configuration names (scope and the others), folded and
/// sorted: what a delta cursor records, so that a cursor taken under another
/// configuration is not read as a delta of this one. The groups declared
/// distinct follow, marked (a look-alike's members are read, a distinct
/// group's are not); without any, the list is what it always was.
pub(super) fn configured_names(
    scope: &[String],
    other: &[String],
    distinct: &[String],
) -> Vec<String> {
    let names: BTreeSet<String> = scope
        .iter()
        .chain(other)
        .map(|name| crate::policy::fold_group_name(name))
        .collect();
    let distinct: BTreeSet<String> = distinct
        .iter()
        .map(|name| format!("distinct:{}", crate::model::compose(name).to_lowercase()))
        .collect();
    names.into_iter().chain(distinct).collect()
}

/// The names of a person's `groups` that the policy reads (every one when
/// `interest` is empty), sorted, each once; `parse_group` reads (id, name).
///
/// Two of them under one configured name are refused as a whole read refuses them
/// (see [`super::refuse_ambiguous_names`]). A look-alike that is the person's only
/// group of that name is not seen here: the next whole read refuses it.
pub(super) fn names_of_interest(
    provider: &'static str,
    groups: &[Value],
    interest: &GroupInterest,
    parse_group: impl Fn(&Value) -> Result<(String, String), DirectoryError>,
) -> Result<Vec<String>, DirectoryError> {
    let parsed = groups
        .iter()
        .map(parse_group)
        .collect::<Result<Vec<_>, _>>()?;
    super::refuse_ambiguous_names(
        provider,
        interest,
        parsed.iter().map(|(id, name)| (id.as_str(), name.as_str())),
        "rename or delete the look-alike",
    )?;
    let names: BTreeSet<String> = parsed
        .into_iter()
        .map(|(_, name)| name)
        .filter(|name| interest.wants(name))
        .collect();
    Ok(names.into_iter().collect())
}

/// The groups a connector's settings name, as [`groups_of_interest`] checks
/// them: `policy.scope_groups`, the other configured groups, the required ones,
/// and those `safety.distinct_groups` declares other groups.
#[derive(Debug, Clone, Copy)]
pub(super) struct NamedGroups<'a> {
    pub scope_groups: &'a [String],
    pub other_groups: &'a [String],
    pub required_groups: &'a [super::RequiredGroup],
    pub distinct_groups: &'a [String],
}

/// Ids of the groups whose members a full snapshot reads: those the configuration
/// names (every group when it names none). Refuses two groups under one configured
/// name, a missing scope group and a missing required group (see
/// [`super::check_scope_groups`], [`super::check_named_groups`]). `what` says what a
/// group name is in this directory; `remedy` what to do about a look-alike.
pub(super) fn groups_of_interest(
    provider: &'static str,
    groups: &[(String, String)],
    named: NamedGroups<'_>,
    what: &str,
    remedy: &str,
) -> Result<HashSet<String>, DirectoryError> {
    let NamedGroups {
        scope_groups,
        other_groups,
        required_groups,
        distinct_groups,
    } = named;
    let interest = GroupInterest::new(scope_groups, other_groups, distinct_groups);
    if interest.is_everything() {
        return Ok(groups.iter().map(|(id, _)| id.clone()).collect());
    }
    super::refuse_ambiguous_names(
        provider,
        &interest,
        groups.iter().map(|(id, name)| (id.as_str(), name.as_str())),
        remedy,
    )?;
    let present: HashSet<&str> = groups.iter().map(|(_, n)| n.as_str()).collect();
    super::check_scope_groups(provider, &present, scope_groups, distinct_groups, what)?;
    super::check_named_groups(
        provider,
        &present,
        other_groups,
        required_groups,
        distinct_groups,
        what,
    )?;
    Ok(groups
        .iter()
        .filter(|(_, name)| interest.wants(name))
        .map(|(id, _)| id.clone())
        .collect())
}

/// Group names sorted, each once: an identity's `groups`.
fn sorted_unique(names: &[String]) -> Vec<String> {
    names
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Refuses an app scope with an assigned group that the group listing (`groups`,
/// (id, name)) does not show: its members would drop out of scope and look
/// deleted, as with a missing scope group.
pub(super) fn check_app_groups_listed(
    provider: &'static str,
    groups: &[(String, String)],
    app_groups: &HashSet<String>,
    listing: &str,
) -> Result<(), DirectoryError> {
    let listed: HashSet<&str> = groups.iter().map(|(id, _)| id.as_str()).collect();
    let mut missing: Vec<&str> = app_groups
        .iter()
        .map(String::as_str)
        .filter(|id| !listed.contains(id))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort_unstable();
    Err(DirectoryError::Scope {
        provider,
        message: format!(
            "the app (directory.app_id) is assigned group(s) {} that {listing} does not list; \
             their members would drop out of scope",
            missing
                .iter()
                .map(|id| format!("{id:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// The groups (id, name) whose members a full snapshot reads, in the order
/// listed: those the policy names (`wanted`), then, with an app, the groups
/// assigned to it that the policy does not name (their members are in scope).
pub(super) fn groups_to_read(
    groups: &[(String, String)],
    wanted: &HashSet<String>,
    app_groups: Option<&HashSet<String>>,
) -> Vec<(String, String)> {
    let mut to_read: Vec<(String, String)> = groups
        .iter()
        .filter(|(id, _)| wanted.contains(id))
        .cloned()
        .collect();
    if let Some(app_groups) = app_groups {
        to_read.extend(
            groups
                .iter()
                .filter(|(id, _)| app_groups.contains(id) && !wanted.contains(id))
                .cloned(),
        );
    }
    to_read
}

/// A full snapshot from what a connector read: `identities` as listed (an id
/// listed twice is kept once, the first time), the member ids of each group of
/// `read` (`members[i]` of `read[i]`), the ids of the groups whose names count
/// (`wanted`), and with an app its direct (user, group) assignments: then only
/// people assigned directly or through an assigned group are in scope. An
/// assigned group's people are `assigned_members[i]` when given (a provider whose
/// `members` are transitive, where an assignment covers only direct members),
/// else `members[i]`. Sorted by id, each identity's groups sorted and unique.
pub(super) fn assemble_snapshot(
    identities: Vec<Identity>,
    read: &[(String, String)],
    members: &[Vec<String>],
    wanted: &HashSet<String>,
    app_scope: Option<&(HashSet<String>, HashSet<String>)>,
    assigned_members: Option<&[Vec<String>]>,
) -> DirectorySnapshot {
    let mut seen = HashSet::new();
    let mut identities: Vec<Identity> = identities
        .into_iter()
        .filter(|identity| seen.insert(identity.id.clone()))
        .collect();
    let mut groups_of: HashMap<&str, Vec<String>> = HashMap::new();
    let mut via_app_groups: HashSet<&str> = HashSet::new();
    for (i, ((id, name), member_ids)) in read.iter().zip(members).enumerate() {
        if wanted.contains(id) {
            for member in member_ids {
                groups_of.entry(member).or_default().push(name.clone());
            }
        }
        if app_scope.is_some_and(|(_, app_groups)| app_groups.contains(id)) {
            let assigned = assigned_members
                .and_then(|direct| direct.get(i))
                .unwrap_or(member_ids);
            via_app_groups.extend(assigned.iter().map(String::as_str));
        }
    }
    for identity in &mut identities {
        if let Some(names) = groups_of.get(identity.id.as_str()) {
            identity.groups = sorted_unique(names);
        }
    }
    if let Some((app_users, _)) = app_scope {
        identities.retain(|i| app_users.contains(&i.id) || via_app_groups.contains(i.id.as_str()));
    }
    identities.sort_by(|a, b| a.id.cmp(&b.id));
    DirectorySnapshot {
        identities,
        complete: true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// Settings built without the configuration's bounds: a concurrency past
    /// what the semaphore holds is an error, not its panic.
    #[test]
    fn a_concurrency_past_the_semaphores_maximum_is_an_error() {
        let built = Transport::new(
            std::time::Duration::from_secs(5),
            usize::MAX,
            0,
            crate::retry::RetryPolicy::default(),
            1 << 20,
            false,
            None,
        );
        let Err(error) = built else {
            panic!("a transport with usize::MAX permits");
        };
        assert!(
            error
                .to_string()
                .contains("max_concurrency must be at most"),
            "{error}"
        );
    }

    #[test]
    fn same_origin_rejects_other_hosts_and_schemes() {
        let base = "https://acme.okta.com";
        assert!(same_origin(
            base,
            "https://acme.okta.com/api/v1/users?after=x"
        ));
        assert!(!same_origin(base, "https://evil.example/api/v1/users"));
        assert!(!same_origin(base, "http://acme.okta.com/api/v1/users"));
        assert!(!same_origin(base, "not a url"));
    }

    /// A 401 or 403 a web page said is a proxy's, a firewall's or a WAF's in
    /// front of the provider, named by its origin, not the credential's; said
    /// whole, however long the page's title (only the provider's text is cut).
    /// Another status with a page keeps the hint to check the URL.
    #[test]
    fn a_refusal_by_a_web_page_says_to_check_what_is_in_front_of_the_provider() {
        let long_title = "Access Denied ".repeat(7);
        let page = |status: u16| Reply {
            status,
            headers: HeaderMap::new(),
            body: format!("<html><head><title>{long_title}</title></head>SSWS s3cret</html>"),
            origin: "https://acme.okta.com".to_owned(),
        };
        let said = |status: u16| {
            status_error(
                "GET /api/v1/users",
                &page(status),
                None,
                "ignored".to_owned(),
                None,
                &["s3cret"],
            )
            .to_string()
        };
        for status in [401, 403] {
            let text = said(status);
            assert!(
                text.starts_with(&format!("GET /api/v1/users: HTTP {status}: an HTML page (")),
                "{text}"
            );
            assert!(
                text.ends_with(
                    "a page from something in front of https://acme.okta.com (a proxy's, \
                     firewall's or WAF's block or sign-in page), so not the credential: check \
                     the proxy, firewall or WAF in front of https://acme.okta.com (its rules \
                     and allow-list for this machine's address), and HTTPS_PROXY/NO_PROXY"
                ),
                "{text}"
            );
        }
        let gateway = said(502);
        assert!(gateway.contains("check directory.url"), "{gateway}");
        assert!(!gateway.contains("in front of"), "{gateway}");
    }

    #[test]
    fn a_web_page_is_known_by_its_start_or_type_and_quoted_by_its_title_only() {
        let reply = |content_type: Option<&str>, body: &str| {
            let mut headers = HeaderMap::new();
            if let Some(t) = content_type {
                headers.insert(reqwest::header::CONTENT_TYPE, t.parse().unwrap());
            }
            Reply {
                status: 200,
                headers,
                body: body.to_owned(),
                origin: "https://acme.okta.com".to_owned(),
            }
        };
        let title = |content_type, body| html_title(&reply(content_type, body)).map(str::to_owned);
        assert_eq!(title(None, "[]"), None);
        assert_eq!(title(Some("application/json"), "{\"value\": []}"), None);
        assert_eq!(
            title(None, "  <html><head><title> Blocked </title>token=s3cret"),
            Some("Blocked".to_owned())
        );
        assert_eq!(
            title(Some("Text/HTML; charset=utf-8"), "Denied"),
            Some(String::new())
        );
        assert_eq!(
            title(None, "<TITLE>Zugriff verweigert \u{e9}\nline two</TITLE>"),
            Some("Zugriff verweigert \u{e9}".to_owned())
        );
        let long = format!("<title>{}</title>", "\u{e9}".repeat(300));
        assert!(title(None, &long).unwrap().chars().count() <= 100);
        assert_eq!(title(None, "<title>unterminated"), Some(String::new()));
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_reused_then_refreshed_five_minutes_before_expiry() {
        let cache = TokenCache::default();
        let fetches = AtomicU64::new(0);
        let get = || {
            cache.get(|| async {
                let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
                Ok((
                    SecretString::from(format!("t{n}")),
                    Duration::from_secs(3600),
                ))
            })
        };
        assert_eq!(get().await.unwrap().expose_secret(), "t1");
        tokio::time::advance(Duration::from_secs(3299)).await;
        assert_eq!(get().await.unwrap().expose_secret(), "t1");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(get().await.unwrap().expose_secret(), "t2");
        // A 401 with t1 after t2 replaced it does not throw t2 away.
        cache.invalidate(&SecretString::from("t1".to_owned())).await;
        assert_eq!(get().await.unwrap().expose_secret(), "t2");
        cache.invalidate(&SecretString::from("t2".to_owned())).await;
        assert_eq!(get().await.unwrap().expose_secret(), "t3");
    }

    /// `expires_in: 18446744073709551615` from a broken issuer: no overflow panic,
    /// and the token is fetched again within a day.
    #[tokio::test(start_paused = true)]
    async fn an_absurd_token_lifetime_is_capped_at_a_day() {
        let cache = TokenCache::default();
        let fetches = AtomicU64::new(0);
        let get = || {
            cache.get(|| async {
                let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
                Ok((
                    SecretString::from(format!("t{n}")),
                    Duration::from_secs(u64::MAX),
                ))
            })
        };
        assert_eq!(get().await.unwrap().expose_secret(), "t1");
        tokio::time::advance(Duration::from_secs(23 * 3600)).await;
        assert_eq!(get().await.unwrap().expose_secret(), "t1");
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(get().await.unwrap().expose_secret(), "t2");
    }

    #[test]
    fn endpoints_name_path_and_query_without_host() {
        assert_eq!(
            endpoint_of("GET", "https://acme.okta.com/api/v1/users?limit=200"),
            "GET /api/v1/users?limit=200"
        );
    }

    #[test]
    fn secrets_from_files_are_trimmed_and_errors_name_the_key() {
        let dir = std::env::temp_dir().join(format!("sw-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let path = dir.join("token");
        std::fs::write(&path, "abc\n").ok();
        let secret = Secret::File {
            key: "directory.token_file",
            path: path.clone(),
        };
        assert_eq!(
            secret.read().map(|s| s.expose_secret().to_owned()).ok(),
            Some("abc".into())
        );
        let missing = Secret::File {
            key: "directory.token_file",
            path: dir.join("missing"),
        };
        let error = missing
            .read()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("directory.token_file"), "{error}");
        assert_eq!(
            format!("{:?}", Secret::Inline("x".to_owned().into())),
            "[redacted]"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    /// An AD bind password ending in a space works inline, so it must work from
    /// `bind_password_file` too: only the file's final line break is dropped.
    #[test]
    fn a_secret_file_keeps_spaces_and_loses_only_its_final_line_break() {
        let dir = tempfile::tempdir().unwrap();
        let read = |text: &str| {
            let path = dir.path().join("bind-password");
            std::fs::write(&path, text).unwrap();
            Secret::File {
                key: "directory.bind_password_file",
                path,
            }
            .read()
            .map(|s| s.expose_secret().to_owned())
        };
        assert_eq!(read("pass \n").unwrap(), "pass ");
        assert_eq!(read(" pass \r\n").unwrap(), " pass ");
        assert_eq!(read("pass\n\n").unwrap(), "pass");
        assert_eq!(read("pass").unwrap(), "pass");
        let token = Secret::File {
            key: "directory.token_file",
            path: dir.path().join("token"),
        };
        std::fs::write(dir.path().join("token"), " tok \r\n").unwrap();
        assert_eq!(token.read().unwrap().expose_secret(), "tok");
        for blank in ["", "\n", "  \r\n", "\t\n"] {
            let error = read(blank).unwrap_err().to_string();
            assert!(
                error.contains("directory.bind_password_file") && error.contains("is empty"),
                "{blank:?}: {error}"
            );
        }
    }
}
