//! HTTP pieces shared by every remote connector (the SCIM workspace client and the
//! directory connectors): one way to build a `reqwest` client on rustls + ring, one
//! query encoder, one way to put an id in a path ([`path_segment`]), and one
//! description of a failed exchange. Retries live in [`crate::retry`]; rate limits
//! and auth are each connector's own business.

use std::time::Duration;

/// A `reqwest` client on rustls with the ring provider. Installs ring as the
/// process-wide rustls provider when none is yet (reqwest panics without one).
pub fn client(connect_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    // Another component may have installed it already; either way one is there.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
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

/// A response body as text. JSON is UTF-8 (RFC 8259), so the body is checked once
/// and kept: `Response::text` decodes it with `from_utf8_lossy`, whose scan was
/// about 3% of the CPU samples of a 10k end-to-end benchmark, six times what
/// `String::from_utf8` takes, and then copies it. A body that is not UTF-8 is
/// still read, with U+FFFD where it was invalid.
pub async fn body_text(response: reqwest::Response) -> Result<String, reqwest::Error> {
    let bytes = response.bytes().await?;
    Ok(match String::from_utf8(Vec::from(bytes)) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// Why a request got no HTTP answer, with the cause chain ("timed out: …",
/// "connection failed: …"), and whether another attempt may help. reqwest's own
/// Display carries the URL, never headers; callers name the endpoint themselves.
pub fn describe_failure(e: &reqwest::Error) -> (String, bool) {
    let mut message = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    // A builder error (bad URL) will not fix itself; everything else that failed
    // before a status arrived is the network's or the server's doing.
    (message, !e.is_builder())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn response(body: &'static [u8]) -> reqwest::Response {
        reqwest::Response::from(http::Response::new(body))
    }

    #[tokio::test]
    async fn a_utf8_body_is_read_as_it_came() {
        let text = body_text(response("{\"displayName\":\"Zoë 🚀\"}".as_bytes()))
            .await
            .unwrap();
        assert_eq!(text, "{\"displayName\":\"Zoë 🚀\"}");
    }

    #[tokio::test]
    async fn invalid_sequences_become_replacement_characters() {
        let text = body_text(response(b"{\"detail\":\"bad \xff\xfe byte\"}"))
            .await
            .unwrap();
        assert_eq!(text, "{\"detail\":\"bad \u{fffd}\u{fffd} byte\"}");
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
