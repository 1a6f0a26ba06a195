//! DPoP proofs (RFC 9449) for an OAuth service app whose tokens are bound to a
//! key: Okta's "Require Demonstrating Proof of Possession (DPoP) header in token
//! requests", on by default for API service apps created in the Admin Console.
//!
//! The key is an ES256 (P-256) pair made with ring for one connector instance and
//! held in memory only: nothing to configure, store or rotate, and a restart makes
//! a new one (its tokens are fetched anew anyway). Neither the key nor a proof
//! ever reaches an error or a log.
//!
//! A proof is a JWT with header `typ: dpop+jwt`, `alg: ES256` and the public key
//! as `jwk`; claims `htm` (the method), `htu` (the URL without query and
//! fragment), `iat`, a fresh `jti`, `ath` (base64url SHA-256 of the access token)
//! on a resource request, and `nonce` when the server handed one out.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

use super::{DirectoryError, jwt};

/// An ephemeral P-256 key pair that signs DPoP proofs.
pub(crate) struct DpopKey {
    pair: EcdsaKeyPair,
    /// The public key as a JWK (`kty`, `crv`, `x`, `y`).
    jwk: Value,
    rng: SystemRandom,
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DpopKey(..)")
    }
}

impl DpopKey {
    /// A new key pair from the system's randomness.
    pub fn generate() -> Result<DpopKey, DirectoryError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| DirectoryError::Settings("no system randomness for a DPoP key".into()))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|e| DirectoryError::Settings(format!("making a DPoP key failed: {e}")))?;
        // The uncompressed point: 0x04, then x and y (32 bytes each).
        let point = pair.public_key().as_ref();
        let (Some(&4), Some(x), Some(y)) = (point.first(), point.get(1..33), point.get(33..65))
        else {
            return Err(DirectoryError::Settings(
                "making a DPoP key failed: not an uncompressed P-256 point".into(),
            ));
        };
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
        });
        Ok(DpopKey { pair, jwk, rng })
    }

    /// A proof for `method` `url` issued at `iat` (Unix seconds), bound to
    /// `access_token` (`ath`) on a resource request, with the server's `nonce`.
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
        iat: u64,
    ) -> Result<String, DirectoryError> {
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk});
        let mut claims = json!({
            "htm": method,
            "htu": htu(url),
            "iat": iat,
            "jti": jwt::random_id()?,
        });
        if let Some(token) = access_token {
            claims["ath"] = access_token_hash(token).into();
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = nonce.into();
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        // FIXED: r and s as 32 bytes each, the JWS encoding of ES256 (RFC 7518
        // §3.4), not ASN.1.
        let signature = self
            .pair
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| DirectoryError::Settings("signing a DPoP proof failed".into()))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// `ath`: the base64url SHA-256 of the access token's ASCII.
pub(crate) fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

/// `htu`: `url` without its query and fragment (RFC 9449 §4.2), as Okta's API
/// checks it (okta-sdk-python strips them too); pagination's next links carry
/// `after=…`, which is not part of it.
pub(crate) fn htu(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.into()
        }
        Err(_) => url.split(['?', '#']).next().unwrap_or_default().to_owned(),
    }
}

/// The `error` of a `WWW-Authenticate: DPoP …, error="…"` challenge.
///
/// A field value may hold several challenges (RFC 9110 §11.6.1): a resource
/// that takes both schemes answers `Bearer realm="…", DPoP error="…"` (RFC 9449
/// §7.2), and a proxy may join two `WWW-Authenticate` fields into one. The
/// DPoP challenge is found wherever it stands, and only its own `error` counts
/// (not the Bearer challenge's after it).
pub(crate) fn challenge_error(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(dpop_error_in)
}

/// The DPoP challenge's `error` in one `WWW-Authenticate` field value.
fn dpop_error_in(value: &str) -> Option<String> {
    let mut in_dpop = false;
    for element in outside_quotes(value, ',') {
        let element = element.trim();
        if element.is_empty() {
            continue;
        }
        // `scheme` or `scheme param=…` starts a challenge; `param=…` (blanks
        // allowed around `=`) goes on with the one before.
        let token_end = element.find([' ', '\t', '=']).unwrap_or(element.len());
        let (first, rest) = element.split_at(token_end);
        let param = if rest.trim_start().starts_with('=') {
            element
        } else {
            in_dpop = first.eq_ignore_ascii_case("dpop");
            rest.trim()
        };
        if !in_dpop {
            continue;
        }
        if let Some((name, value)) = param.split_once('=')
            && name.trim().eq_ignore_ascii_case("error")
        {
            return Some(unquoted(value.trim()));
        }
    }
    None
}

/// `value` split at each `separator` outside a quoted string.
fn outside_quotes(value: &str, separator: char) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (at, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&value[start..at]);
                start = at + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

/// A token, or a quoted string without its quotes and escapes.
fn unquoted(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"') else {
        return value.to_owned();
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// The `DPoP-Nonce` header of an answer, when it carries one.
pub(crate) fn nonce_of(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get("dpop-nonce")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn decode(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    /// Verifies `proof` with the key its own `jwk` names; returns (header, claims).
    fn verified(proof: &str) -> (Value, Value) {
        let parts: Vec<&str> = proof.split('.').collect();
        assert_eq!(parts.len(), 3, "{proof}");
        let header = decode(parts[0]);
        let jwk = &header["jwk"];
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        let mut point = vec![4u8];
        point.extend(URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap());
        point.extend(URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap());
        assert_eq!(point.len(), 65);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert_eq!(signature.len(), 64, "r and s, not ASN.1");
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("the proof verifies with its jwk");
        (header, decode(parts[1]))
    }

    #[test]
    fn a_token_request_proof_verifies_with_its_jwk_and_names_the_request() {
        let key = DpopKey::generate().unwrap();
        let url = "https://acme.okta.com/oauth2/v1/token";
        let proof = key.proof("POST", url, None, None, 1_800_000_000).unwrap();
        let (header, claims) = verified(&proof);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        assert!(header["jwk"].get("d").is_none(), "never the private part");
        assert_eq!(claims["htm"], "POST");
        assert_eq!(claims["htu"], url);
        assert_eq!(claims["iat"], 1_800_000_000u64);
        assert!(claims.get("ath").is_none() && claims.get("nonce").is_none());
        let again = key.proof("POST", url, None, None, 1_800_000_000).unwrap();
        let (header2, claims2) = verified(&again);
        assert_eq!(header["jwk"], header2["jwk"], "one key per instance");
        assert_ne!(claims["jti"], claims2["jti"], "a fresh jti every time");
        let other = DpopKey::generate().unwrap();
        let (header3, _) = verified(&other.proof("POST", url, None, None, 0).unwrap());
        assert_ne!(header["jwk"], header3["jwk"], "a new key per instance");
    }

    #[test]
    fn a_resource_proof_carries_ath_nonce_and_an_htu_without_query() {
        let key = DpopKey::generate().unwrap();
        let proof = key
            .proof(
                "GET",
                "https://acme.okta.com/api/v1/users?after=00u2&limit=200#x",
                Some("eyJ.access.token"),
                Some("nonce-1"),
                1,
            )
            .unwrap();
        let (_, claims) = verified(&proof);
        assert_eq!(claims["htm"], "GET");
        assert_eq!(claims["htu"], "https://acme.okta.com/api/v1/users");
        assert_eq!(claims["nonce"], "nonce-1");
        // RFC 9449 §7.1: base64url(SHA-256(ASCII(token))).
        let digest = ring::digest::digest(&ring::digest::SHA256, b"eyJ.access.token");
        assert_eq!(claims["ath"], URL_SAFE_NO_PAD.encode(digest.as_ref()));
    }

    #[test]
    fn the_dpop_challenge_and_nonce_are_read_from_the_headers() {
        let mut headers = HeaderMap::new();
        headers.append(
            "www-authenticate",
            HeaderValue::from_static("Bearer realm=\"x\", error=\"invalid_token\""),
        );
        assert_eq!(challenge_error(&headers), None);
        headers.append(
            "www-authenticate",
            HeaderValue::from_static(
                "DPoP error=\"use_dpop_nonce\", error_description=\"Resource server requires nonce in DPoP proof\"",
            ),
        );
        assert_eq!(challenge_error(&headers).as_deref(), Some("use_dpop_nonce"));
        assert_eq!(nonce_of(&headers), None);
        headers.insert("DPoP-Nonce", HeaderValue::from_static(" eyJ7S_zG.eyJH0-Z "));
        assert_eq!(nonce_of(&headers).as_deref(), Some("eyJ7S_zG.eyJH0-Z"));
    }

    /// Several challenges in one field (RFC 9110 §11.6.1): a resource taking
    /// both schemes, or a proxy joining two fields. The DPoP one counted only
    /// when it came first, and then with the error of a challenge after it.
    #[test]
    fn the_dpop_challenge_is_found_among_others_in_one_field() {
        let error = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("www-authenticate", HeaderValue::from_static(value));
            challenge_error(&headers)
        };
        assert_eq!(
            error(
                "Bearer realm=\"okta\", error=\"invalid_token\", DPoP algs=\"ES256\", \
                 error=\"use_dpop_nonce\", error_description=\"Resource server requires \
                 nonce, in DPoP proof\""
            )
            .as_deref(),
            Some("use_dpop_nonce")
        );
        assert_eq!(
            error("DPoP algs=\"ES256 PS256\", Bearer realm=\"x\", error=\"invalid_token\""),
            None,
            "the Bearer challenge's error is not DPoP's"
        );
        assert_eq!(
            error("Basic realm=\"a, b\", dpop error = use_dpop_nonce").as_deref(),
            Some("use_dpop_nonce")
        );
        assert_eq!(
            error("DPoP error_description=\"say \\\"error=\\\"x\\\"\\\"\", error=\"invalid_dpop_proof\"")
                .as_deref(),
            Some("invalid_dpop_proof")
        );
    }

    #[test]
    fn a_nonce_is_read_trimmed() {
        let mut headers = HeaderMap::new();
        headers.insert("DPoP-Nonce", HeaderValue::from_static(" eyJ7S_zG.eyJH0-Z "));
        assert_eq!(nonce_of(&headers).as_deref(), Some("eyJ7S_zG.eyJH0-Z"));
    }
}
