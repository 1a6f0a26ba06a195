//! HTTP pieces shared by every remote connector (the SCIM workspace client and the
//! directory connectors): one way to build a `reqwest` client on rustls + ring
//! (trusting the system's roots, or a `ca_file`'s instead: [`read_ca_file`]), one
//! query encoder, one way to put an id in a path ([`path_segment`]), one body
//! reader with a size limit ([`body_text`]), the limits a listing and an answer
//! must keep to ([`Limits`]), one description of a failed exchange, and the pause
//! a 429 or 503 with `Retry-After` puts on every request of a client
//! ([`ProviderPause`]). Retries
//! live in [`crate::retry`]; rate limits and auth are each connector's own business.

use std::time::Duration;

/// A `reqwest` client on rustls with the ring provider. Installs ring as the
/// process-wide rustls provider when none is yet (reqwest panics without one).
///
/// `plain_http`: the connection has a plain `http://` URL, and then the client
/// never uses a proxy. Such a URL is accepted without `allow_cleartext` only to a
/// loopback host, as the credential then stays on the machine; reqwest reads
/// `HTTP_PROXY`/`ALL_PROXY` from the environment, and through one the bearer token
/// would travel in cleartext to the proxy's host. HTTPS connections honour
/// `HTTPS_PROXY`/`ALL_PROXY`/`NO_PROXY` (a CONNECT tunnel keeps TLS end to end).
///
/// `ca_pem`: the PEM certificates of a `ca_file` ([`read_ca_file`]), trusted
/// instead of the system's roots; `None` trusts the system's.
pub fn client(
    connect_timeout: Duration,
    plain_http: bool,
    ca_pem: Option<&[u8]>,
) -> Result<reqwest::Client, reqwest::Error> {
    // Another component may have installed it already; either way one is there.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = reqwest::Client::builder();
    let builder = if plain_http {
        builder.no_proxy()
    } else {
        builder
    };
    let builder = match ca_pem {
        Some(pem) => builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(pem)?),
        None => builder,
    };
    builder
        .tls_backend_rustls()
        .connect_timeout(connect_timeout)
        // Providers behind wsgiref-style servers close every connection; do not
        // keep idle ones around for long.
        .pool_idle_timeout(Duration::from_secs(15))
        .user_agent(concat!("seatwarden/", env!("CARGO_PKG_VERSION")))
        // A followed redirect turns a POST into a GET and drops the credential on
        // another host: the answer would be misread (a listing parsed as the
        // created user) or a 401 blamed on a good token. A 3xx is an error that
        // names where it pointed ([`redirect_detail`]).
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Why a `ca_file` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    #[error("cannot read {}: {source}", .file.display())]
    Unreadable {
        file: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", .file.display())]
    Malformed {
        file: std::path::PathBuf,
        message: String,
    },
    /// The TLS library takes a file without a PEM certificate (a DER `.cer`, a
    /// key) as an empty trust store: every connection would then fail at the
    /// handshake, retried for ever.
    #[error(
        "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----); convert a DER file \
         with `openssl x509 -inform der -in FILE -out FILE.pem`",
        .file.display()
    )]
    NoCertificate { file: std::path::PathBuf },
    /// PEM of other kinds only (`found`: their labels, such as `PRIVATE KEY` when
    /// the server's key was named for its CA): converting, as for DER, is no fix.
    #[error(
        "{} holds no certificate, only {}: a ca_file holds the PEM certificate(s) of the CA \
         that issued the server's certificate (-----BEGIN CERTIFICATE-----){}",
        .file.display(),
        .found.join(", "),
        if .found.iter().any(|label| label.contains("PRIVATE KEY")) {
            "; a private key does not belong there: keep it out of files shared as public"
        } else {
            ""
        }
    )]
    OtherPem {
        file: std::path::PathBuf,
        found: Vec<String>,
    },
}

/// Reads a `ca_file` (PEM, one or more CA certificates) and checks that it holds
/// certificates and nothing malformed: the bytes [`client`] and the SMTP
/// transport trust instead of the system's roots.
pub fn read_ca_file(file: &std::path::Path) -> Result<Vec<u8>, CaFileError> {
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(file).map_err(|source| CaFileError::Unreadable {
        file: file.to_owned(),
        source,
    })?;
    let mut certificates = 0;
    for certificate in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        certificate.map_err(|e| CaFileError::Malformed {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        certificates += 1;
    }
    if certificates == 0 {
        let text = String::from_utf8_lossy(&pem);
        let mut found: Vec<String> = text
            .lines()
            .filter_map(|line| {
                line.trim()
                    .strip_prefix("-----BEGIN ")?
                    .strip_suffix("-----")
            })
            .map(str::to_owned)
            .collect();
        found.dedup();
        return Err(match found.is_empty() {
            true => CaFileError::NoCertificate {
                file: file.to_owned(),
            },
            false => CaFileError::OtherPem {
                file: file.to_owned(),
                found,
            },
        });
    }
    Ok(pem)
}

/// What to say about a 3xx answer, from its `Location`.
pub fn redirect_detail(status: u16, headers: &reqwest::header::HeaderMap) -> Option<String> {
    if !(300..400).contains(&status) {
        return None;
    }
    let location = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(no Location)");
    Some(format!(
        "redirected to {location}; seatwarden does not follow redirects: set the URL to \
         the address the provider redirects to"
    ))
}

/// The `<title>` of a body that is a web page (it starts with `<`, as JSON never
/// does, or is served as `text/html`), at most 100 characters of it, on one line;
/// empty when it has none; `None` when the body is no web page. Only the title
/// is quoted: a proxy's page may echo the request, credential included, and the
/// rest of a gateway's error page is markup and styles that say nothing.
pub fn html_title<'b>(content_type: Option<&str>, body: &'b str) -> Option<&'b str> {
    let html_type =
        content_type.is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
    if !html_type && !body.trim_start().starts_with('<') {
        return None;
    }
    let lower = body.to_ascii_lowercase();
    let title = lower
        .find("<title")
        .and_then(|start| Some(start + lower[start..].find('>')? + 1))
        .and_then(|start| Some(&body[start..start + lower[start..].find("</title")?]))
        .map(str::trim)
        .unwrap_or_default();
    let end = title
        .char_indices()
        .take_while(|(i, c)| *i < 100 && !c.is_control())
        .last()
        .map_or(0, |(i, c)| i + c.len_utf8());
    Some(&title[..end])
}

/// Percent-encodes a query component (RFC 3986 unreserved characters stay as-is;
/// spaces become `%20`, not `+`, which some providers do not decode).
///
/// Not for a path segment on its own: `.` stays, and a segment of `.` or `..` is
/// a dot segment the URL parser removes. Use [`path_segment`].
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An id that cannot stand as one URL path segment: empty, `.` or `..`, also once
/// percent-decoded (`%2e`, `.%2E`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsafeSegment(pub String);

impl std::fmt::Display for UnsafeSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str(
                "an empty id cannot be a URL path segment: the request would go to the collection",
            )
        } else {
            write!(
                f,
                "id {:?} cannot be a URL path segment: it is a dot segment, which URL \
                 normalisation removes, so the request would go to another resource",
                self.0
            )
        }
    }
}

impl std::error::Error for UnsafeSegment {}

/// `id` percent-encoded as one path segment (`{base}/Users/{id}`), or an error for
/// an id that would not stay one. The WHATWG URL parser (the `url` crate, so
/// reqwest) removes `.` and `..` segments and treats `%2e` as `.` there, so
/// `DELETE {base}/Users/..` would become `DELETE {base}/`: encoding cannot save
/// such an id, only refusing it can. An id that is one only when decoded is
/// refused too, for a server or proxy that decodes once more.
pub fn path_segment(id: &str) -> Result<String, UnsafeSegment> {
    let decoded = id.to_ascii_lowercase().replace("%2e", ".");
    if matches!(id, "" | "." | "..") || matches!(decoded.as_str(), "." | "..") {
        return Err(UnsafeSegment(id.to_owned()));
    }
    Ok(encode_component(id))
}

/// The most one response body may hold (64 MiB). Legitimate pages are far
/// smaller: 1,000 SCIM users with their groups, 999 Graph users with `$select`,
/// 200 Okta users with custom profiles or 1,000 Okta group members (full user
/// objects) are a few MB. The one that grows with the tenant is a SCIM group and
/// its members (a `/Groups` page or `/Groups/{id}`): at about 150 bytes a member
/// (`value`, `display`, `$ref`) 64 MiB holds some 400,000 memberships on one
/// page. A body past the limit is refused, not cut.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The most pages one listing that follows the provider's next links (Okta's
/// `Link: rel="next"`, Graph's `@odata.nextLink`, a delta round) may take: past
/// it the listing fails rather than loop and grow. 1 M users are 5,000 Okta pages
/// of 200 or 1,002 Graph pages of 999, a group of 1 M members 1,000 pages; Graph
/// may send pages shorter than `$top` (a cast such as `/microsoft.graph.user`
/// can leave them nearly empty), and 100,000 pages still hold 10 M objects at
/// 100 a page. The SCIM client's listings stop at the same absolute cap.
pub const MAX_PAGES: u64 = 100_000;

/// Why a listing stopped at the page cap: `link` (the header or property that
/// names the next page) still led on after `max_pages` pages of `listing` (its
/// first endpoint).
pub fn page_cap_reached(link: &str, max_pages: u64, listing: &str) -> String {
    format!(
        "{link} still leads on after {max_pages} pages of {listing}, the most seatwarden \
         follows in one listing: the endpoint is taken to loop (no tenant is that large)"
    )
}

/// What a directory connector that follows next links (Okta, Entra) reads at
/// most. [`Limits::default`] is what production uses; tests make them small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Pages of one listing ([`MAX_PAGES`]).
    pub max_pages: u64,
    /// Bytes of one response body ([`MAX_BODY_BYTES`]).
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pages: MAX_PAGES,
            max_body_bytes: MAX_BODY_BYTES,
        }
    }
}

/// Why a response body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// The connection failed (or was cut) while the body came in.
    Read(reqwest::Error),
    /// The body is longer than `limit` bytes: its `Content-Length` said so, or
    /// more than that came.
    TooLarge {
        limit: usize,
        content_length: Option<u64>,
    },
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Read(e) => f.write_str(&describe_failure(e).0),
            BodyError::TooLarge {
                limit,
                content_length,
            } => {
                write!(
                    f,
                    "the response body is larger than {}, the most seatwarden reads of one answer",
                    byte_size(*limit)
                )?;
                match content_length {
                    Some(length) => write!(f, " (Content-Length {length})"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for BodyError {}

/// `67108864` as `64 MiB`, `1000` as `1000 bytes`.
fn byte_size(bytes: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// A response body as text, at most `limit` bytes of it: read chunk by chunk, and
/// refused as soon as it passes the limit (at once when its `Content-Length`
/// announces more), so a faulty or hostile endpoint cannot make the process hold
/// an endless body.
///
/// JSON is UTF-8 (RFC 8259), so the body is checked once and kept:
/// `Response::text` decodes it with `from_utf8_lossy`, whose scan was about 3% of
/// the CPU samples of a 10k end-to-end benchmark, six times what
/// `String::from_utf8` takes, and then copies it. A body that is not UTF-8 is
/// still read, with U+FFFD where it was invalid.
pub async fn body_text(mut response: reqwest::Response, limit: usize) -> Result<String, BodyError> {
    let content_length = response.content_length();
    let too_large = || BodyError::TooLarge {
        limit,
        content_length,
    };
    let mut bytes = match content_length {
        Some(length) if length > limit as u64 => return Err(too_large()),
        Some(length) => Vec::with_capacity(usize::try_from(length).unwrap_or(limit)),
        None => Vec::new(),
    };
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if chunk.len() > limit.saturating_sub(bytes.len()) {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// Whether an error status is worth asking again: 408 (the server timed the
/// request out and may be asked again, RFC 9110 §15.5.9), 429 and 5xx except 501
/// ("not implemented": asking again will not implement it). Every connector
/// classifies statuses here, so one that retries 408 and one that gives up on it
/// cannot disagree.
pub fn status_is_transient(status: u16) -> bool {
    matches!(status, 408 | 429) || (status >= 500 && status != 501)
}

/// An answer's `Retry-After` as a delay: delay-seconds, or an HTTP-date measured
/// against the answer's own `Date` (RFC 9110 §6.6.1) when it has one, as both
/// come from the server's clock; this host's clock only without a `Date`. Taken
/// against this host's clock, a date 60 s ahead of a server whose clock is
/// behind ours read as already past, and the retries came at the backoff's
/// pace, a few seconds for all of them, into the throttle; one ahead of ours
/// read as far longer than asked. `Date` has one-second resolution and is set
/// before the answer is read, which can only lengthen the wait.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    crate::retry::parse_retry_after(value, server_time(headers))
}

/// When the server dated an answer (its `Date` header), else this host's now.
pub fn server_time(headers: &reqwest::header::HeaderMap) -> std::time::SystemTime {
    headers
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .unwrap_or_else(std::time::SystemTime::now)
}

/// How [`describe_failure`] begins a request that got no connection, or no
/// answer in time (the callers that tell the operator to check the URL match it).
pub(crate) const CONNECTION_FAILED: &str = "connection failed";
pub(crate) const TIMED_OUT: &str = "timed out";

/// Why a request got no HTTP answer, with the cause chain ("timed out: …",
/// "connection failed: …", "TLS certificate refused: …"), and whether another
/// attempt may help. reqwest's own Display carries the URL, never headers;
/// callers name the endpoint themselves.
pub fn describe_failure(e: &reqwest::Error) -> (String, bool) {
    let tls = if e.is_connect() { tls_error(e) } else { None };
    let certificate = tls.is_some_and(is_certificate_error);
    // The endpoint in front of this message is a method and a path: which server
    // (a typo in the host, a proxy, the wrong port) is what an operator asks first.
    let server = e.url().and_then(|url| {
        Some(format!(
            "{}:{}",
            url.host_str()?,
            url.port_or_known_default()?
        ))
    });
    let to = server.map(|s| format!(" ({s})")).unwrap_or_default();
    let mut message = if e.is_timeout() {
        format!("{TIMED_OUT}{to}")
    } else if certificate {
        format!("TLS certificate refused{to}")
    } else if tls.is_some() {
        format!("TLS handshake failed{to}")
    } else if e.is_connect() {
        format!("{CONNECTION_FAILED}{to}")
    } else {
        format!("request failed{to}")
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    if certificate {
        message.push_str(
            "; the server's certificate must chain to a CA seatwarden trusts (the \
             connection's `ca_file` when it has one, else the system's roots or \
             SSL_CERT_FILE) and name the host in the URL",
        );
    }
    if tls.is_some_and(not_tls) {
        message.push_str(
            "; the server on that port does not speak TLS: if it serves plain HTTP (a \
             sandbox, a sidecar on loopback), the URL starts with http://; else check \
             the port",
        );
    }
    // A builder error (bad URL) will not fix itself, nor will a certificate this
    // host does not trust or a handshake the two sides cannot agree on: retrying
    // them only delays the error by the whole backoff. Everything else that failed
    // before a status arrived is the network's or the server's doing, an alert
    // from the far side included (a load balancer mid-rotation).
    (
        message,
        !e.is_builder() && !tls.is_some_and(tls_fails_for_good),
    )
}

/// A TLS failure that the next attempt meets again: a certificate this host does
/// not accept, protocol versions and ciphers the two sides do not share, or a
/// server that does not speak TLS at all ([`not_tls`]). Not an alert the server
/// sent or a connection cut mid-handshake.
pub(crate) fn tls_fails_for_good(e: &rustls::Error) -> bool {
    is_certificate_error(e) || matches!(e, rustls::Error::PeerIncompatible(_)) || not_tls(e)
}

/// The server answered the TLS hello with something that is no TLS record: a
/// plain-HTTP (or plain SMTP) port asked with `https://` (`smtps://`), as a
/// sandbox or a sidecar on loopback is. What it answers first is text, whose
/// first byte is no TLS content type.
pub(crate) fn not_tls(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
    )
}

/// The rustls error behind a failure, if the TLS handshake is what failed.
/// hyper-util wraps it in an `io::Error` inside another `io::Error`, and
/// `io::Error::source` skips the error it wraps, so each one is opened with
/// `get_ref`.
pub(crate) fn tls_error<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(found) = s.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(inner) = s
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && let Some(found) = tls_error(inner)
        {
            return Some(found);
        }
        source = s.source();
    }
    None
}

fn is_certificate_error(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType
            | rustls::Error::InvalidCertRevocationList(_)
    )
}

/// Whether a `Host` header value is `localhost`, a loopback IPv4 literal or
/// `[::1]`, each with or without a port: the check that keeps a DNS-rebinding page
/// away from a listener meant for this machine (the daemon's `/status`, the sandbox).
pub fn host_is_loopback(host: &str) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((ip, rest)) => (ip, rest),
            None => return false,
        },
        None => host
            .find(':')
            .map_or((host, ""), |colon| host.split_at(colon)),
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
        });
    if !port_ok {
        return false;
    }
    if host.starts_with('[') {
        return name
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    }
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// A `ca_file` that holds a private key (the server's, named for its CA) is
    /// refused saying what it holds, not with the DER conversion, which would not
    /// help; a file with no PEM at all still gets that.
    #[test]
    fn a_ca_file_holding_a_key_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("server-key.pem");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nMIIEvQ==\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let error = read_ca_file(&key).unwrap_err().to_string();
        assert!(
            error.contains("holds no certificate, only PRIVATE KEY"),
            "{error}"
        );
        assert!(
            error.contains("a private key does not belong there"),
            "{error}"
        );
        assert!(!error.contains("-inform der"), "{error}");
        let der = dir.path().join("ca.cer");
        std::fs::write(&der, [0x30, 0x82, 0x01, 0x0a]).unwrap();
        let error = read_ca_file(&der).unwrap_err().to_string();
        assert!(error.contains("-inform der"), "{error}");
    }

    /// Only what the next attempt meets again stops the retries: an alert from the
    /// far side (a load balancer mid-rotation) is retried.
    #[test]
    fn only_certificate_incompatibility_and_non_tls_failures_are_final() {
        use rustls::{AlertDescription, CertificateError, Error, PeerIncompatible};
        assert!(tls_fails_for_good(&Error::InvalidCertificate(
            CertificateError::UnknownIssuer
        )));
        assert!(tls_fails_for_good(&Error::PeerIncompatible(
            PeerIncompatible::NoCipherSuitesInCommon
        )));
        // A plain-HTTP port answers text: the next attempt gets the same.
        assert!(tls_fails_for_good(&Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType
        )));
        assert!(!tls_fails_for_good(&Error::InvalidMessage(
            rustls::InvalidMessage::MessageTooShort
        )));
        assert!(!tls_fails_for_good(&Error::AlertReceived(
            AlertDescription::HandshakeFailure
        )));
        assert!(!tls_fails_for_good(&Error::AlertReceived(
            AlertDescription::InternalError
        )));
    }

    fn response(body: &'static [u8]) -> reqwest::Response {
        reqwest::Response::from(http::Response::new(body))
    }

    #[tokio::test]
    async fn a_utf8_body_is_read_as_it_came() {
        let text = body_text(
            response("{\"displayName\":\"Zoë 🚀\"}".as_bytes()),
            MAX_BODY_BYTES,
        )
        .await
        .unwrap();
        assert_eq!(text, "{\"displayName\":\"Zoë 🚀\"}");
    }

    #[tokio::test]
    async fn invalid_sequences_become_replacement_characters() {
        let text = body_text(
            response(b"{\"detail\":\"bad \xff\xfe byte\"}"),
            MAX_BODY_BYTES,
        )
        .await
        .unwrap();
        assert_eq!(text, "{\"detail\":\"bad \u{fffd}\u{fffd} byte\"}");
    }

    #[tokio::test]
    async fn a_body_announced_past_the_limit_is_refused_one_at_the_limit_is_read() {
        let error = body_text(response(b"0123456789A"), 10).await.unwrap_err();
        assert!(
            matches!(
                error,
                BodyError::TooLarge {
                    limit: 10,
                    content_length: Some(11)
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "the response body is larger than 10 bytes, the most seatwarden reads of one \
             answer (Content-Length 11)"
        );
        assert_eq!(
            body_text(response(b"0123456789"), 10).await.unwrap(),
            "0123456789"
        );
    }

    /// A server that answers one request with `head`, then `chunk` `times` times
    /// (without end when `None`), then `tail`, and holds the connection until the
    /// client hangs up; returns its URL.
    fn raw_server(
        head: &'static str,
        chunk: String,
        times: Option<usize>,
        tail: &'static str,
    ) -> String {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            if stream.write_all(head.as_bytes()).is_err() {
                return;
            }
            let mut sent = 0;
            while times.is_none_or(|n| sent < n) {
                // The client hangs up once it has refused the body.
                if stream.write_all(chunk.as_bytes()).is_err() {
                    return;
                }
                sent += 1;
            }
            if stream.write_all(tail.as_bytes()).is_ok() {
                let _ = stream.read(&mut [0; 1]);
            }
        });
        url
    }

    const CHUNKED: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                           transfer-encoding: chunked\r\n\r\n";

    fn kib_chunk() -> String {
        format!("400\r\n{}\r\n", "x".repeat(1024))
    }

    #[tokio::test]
    async fn an_endless_body_is_cut_off_at_the_limit() {
        let http = client(Duration::from_secs(5), true, None).unwrap();
        let answer = http
            .get(raw_server(CHUNKED, kib_chunk(), None, ""))
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap();
        let error = body_text(answer, 64 * 1024).await.unwrap_err();
        assert!(
            matches!(
                error,
                BodyError::TooLarge {
                    limit: 65536,
                    content_length: None
                }
            ),
            "{error:?}"
        );
        // The same stream, ending under the limit, is read whole.
        let answer = http
            .get(raw_server(CHUNKED, kib_chunk(), Some(64), "0\r\n\r\n"))
            .send()
            .await
            .unwrap();
        assert_eq!(body_text(answer, 64 * 1024).await.unwrap().len(), 64 * 1024);
    }

    /// A `Content-Length` past the limit is refused before the body is waited for.
    #[tokio::test]
    async fn a_body_announced_past_the_limit_is_not_waited_for() {
        let http = client(Duration::from_secs(5), true, None).unwrap();
        let head = "HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n";
        // Ten bytes come, then nothing: reading on would wait for the timeout.
        let answer = http
            .get(raw_server(head, "0123456789".into(), Some(1), ""))
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap();
        let error = tokio::time::timeout(Duration::from_secs(5), body_text(answer, 1000))
            .await
            .expect("the body was waited for")
            .unwrap_err();
        assert!(
            matches!(
                error,
                BodyError::TooLarge {
                    limit: 1000,
                    content_length: Some(1_000_000)
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn directory_and_workspace_errors_agree_on_which_statuses_are_retried() {
        use crate::directory::DirectoryError;
        use crate::retry::Transient;
        use crate::workspace::WorkspaceError;
        for status in 100..600 {
            let directory = DirectoryError::Status {
                endpoint: "GET /api/v1/users".into(),
                status,
                code: None,
                detail: String::new(),
                retry_after: None,
            };
            let workspace = WorkspaceError::Status {
                endpoint: "GET /Users".into(),
                status,
                scim_type: None,
                detail: String::new(),
                retry_after: None,
            };
            assert_eq!(
                directory.is_transient(),
                status_is_transient(status),
                "{status}"
            );
            assert_eq!(
                workspace.is_transient(),
                status_is_transient(status),
                "{status}"
            );
        }
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(status_is_transient(status), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 501] {
            assert!(!status_is_transient(status), "{status}");
        }
    }

    /// A `Retry-After` date is measured against the answer's `Date`, both the
    /// server's clock: a server an hour behind this host (or this host an hour
    /// ahead) asking for 60 s gets 60 s, not an immediate retry; one an hour
    /// ahead, 60 s and not the cap. Without a `Date`, against this host's clock.
    #[test]
    fn a_retry_after_date_is_measured_against_the_answers_date() {
        use reqwest::header::{DATE, HeaderMap, HeaderValue, RETRY_AFTER};
        let answer = |dated: std::time::SystemTime, retry_at: std::time::SystemTime| {
            let mut headers = HeaderMap::new();
            let date = httpdate::fmt_http_date(dated);
            let retry_at = httpdate::fmt_http_date(retry_at);
            headers.insert(DATE, HeaderValue::from_str(&date).unwrap());
            headers.insert(RETRY_AFTER, HeaderValue::from_str(&retry_at).unwrap());
            headers
        };
        let hour = Duration::from_secs(3600);
        let minute = Duration::from_secs(60);
        let now = std::time::SystemTime::now();
        for server_now in [now - hour, now + hour] {
            let asked = retry_after(&answer(server_now, server_now + minute));
            assert_eq!(
                asked,
                Some(minute),
                "{:?}",
                httpdate::fmt_http_date(server_now)
            );
        }
        // Seconds need no clock.
        let mut headers = answer(now - hour, now);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        // No `Date`: this host's clock.
        headers.remove(DATE);
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(now - minute)).unwrap(),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn the_limit_is_named_in_mib_when_it_is_whole_mib() {
        assert_eq!(byte_size(MAX_BODY_BYTES), "64 MiB");
        assert_eq!(byte_size(1000), "1000 bytes");
    }

    #[test]
    fn dot_segments_and_empty_ids_are_refused_as_path_segments() {
        for id in ["", ".", "..", "%2e", "%2E", "%2e%2E", ".%2e", "%2E."] {
            let error = path_segment(id).unwrap_err();
            assert_eq!(error, UnsafeSegment(id.to_owned()));
            assert!(error.to_string().contains("path segment"), "{error}");
        }
        // Why: the URL parser removes them, so the request names another resource.
        for dots in [".", "..", "%2e%2e"] {
            let url = url::Url::parse(&format!("https://x.example/scim/v2/Users/{dots}")).unwrap();
            assert_ne!(url.path(), format!("/scim/v2/Users/{dots}"), "{dots}");
        }
        // Anything else stays one segment, where the URL parser leaves it.
        for id in [
            "00u1", "a.b", "...", "..a", ".a", "a/..", "%252e", "x y", "ü",
        ] {
            let segment = path_segment(id).unwrap();
            let path = format!("/scim/v2/Users/{segment}");
            let url = url::Url::parse(&format!("https://x.example{path}")).unwrap();
            assert_eq!(url.path(), path, "{id}");
            assert_eq!(url.path_segments().unwrap().count(), 4, "{id}");
        }
        assert_eq!(path_segment("a/..").unwrap(), "a%2F..");
    }
}

/// Set by a 429 or 503 with `Retry-After`: no request of the client that holds it
/// leaves before then. Providers (Microsoft Graph, SCIM services) throttle the
/// app, not the request, and ask that nothing be sent until `Retry-After` has
/// passed; requests running concurrently would otherwise each be refused in turn.
#[derive(Debug, Default)]
pub struct ProviderPause(std::sync::Mutex<Option<tokio::time::Instant>>);

impl ProviderPause {
    /// When requests may go again, if that is still ahead.
    pub fn until(&self) -> Option<tokio::time::Instant> {
        let until = *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        until.filter(|until| *until > tokio::time::Instant::now())
    }

    /// Holds the caller until the last pause has passed (looked at again after
    /// each sleep: another 429 may have moved it).
    pub async fn wait_out(&self) {
        while let Some(until) = self.until() {
            tokio::time::sleep_until(until).await;
        }
    }

    /// Pauses every request for `pause` from now, unless a longer pause is on;
    /// `provider` names who asked ("the workspace", "the directory") in the log.
    pub fn pause_for(&self, pause: Duration, provider: &str, endpoint: &str, status: u16) {
        if pause.is_zero() {
            return;
        }
        let until = tokio::time::Instant::now() + pause;
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.is_none_or(|current| current < until) {
            *guard = Some(until);
            tracing::warn!(
                endpoint,
                status,
                pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                "{provider} asked to slow down: every request waits"
            );
        }
    }
}
