//! HTTP pieces shared by every remote connector (the SCIM workspace client and the
//! directory connectors): one way to build a `reqwest` client on rustls + ring, one
//! query encoder, and one description of a failed exchange. Retries live in
//! [`crate::retry`]; rate limits and auth are each connector's own business.

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
}
