//! Client assertions (RFC 7523) for OAuth 2.0 client credentials: Okta service apps
//! (`private_key_jwt`) and Entra certificate credentials. RS256 is signed with ring
//! (already in the tree through rustls): RSA PKCS#1 v1.5 with SHA-256 over
//! `base64url(header).base64url(claims)`.
//!
//! Keys are PEM files: PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE
//! KEY`). Neither the key nor the signed assertion ever reaches an error or a log.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

use super::DirectoryError;

/// An RSA signing key read from a PEM file.
pub(crate) struct SigningKey {
    pair: RsaKeyPair,
}

impl SigningKey {
    /// `what` names the key for errors (`directory.private_key_file /etc/…`).
    pub fn from_pem(pem: &[u8], what: &str) -> Result<SigningKey, DirectoryError> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| DirectoryError::Settings(format!("{what}: not a PEM private key: {e}")))?;
        let pair = match &der {
            PrivateKeyDer::Pkcs8(key) => RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(key) => RsaKeyPair::from_der(key.secret_pkcs1_der()),
            _ => {
                return Err(DirectoryError::Settings(format!(
                    "{what}: an RSA key is needed (PKCS#8 or PKCS#1 PEM) for RS256"
                )));
            }
        }
        .map_err(|e| DirectoryError::Settings(format!("{what}: unusable RSA key: {e}")))?;
        Ok(SigningKey { pair })
    }

    /// A signed RS256 JWT with `header` fields added to `alg`/`typ`.
    pub fn sign(
        &self,
        header_fields: serde_json::Map<String, serde_json::Value>,
        claims: &serde_json::Value,
    ) -> Result<String, DirectoryError> {
        let mut header = serde_json::Map::new();
        header.insert("alg".into(), "RS256".into());
        header.insert("typ".into(), "JWT".into());
        header.extend(header_fields);
        let encode = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let signing_input = format!(
            "{}.{}",
            encode(&serde_json::Value::Object(header)),
            encode(claims)
        );
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| DirectoryError::Settings("signing the client assertion failed".into()))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// A random `jti` so a token endpoint can reject replays.
pub(crate) fn random_id() -> Result<String, DirectoryError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| DirectoryError::Settings("no system randomness for a JWT id".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// How far an assertion is dated back. A host clock a few seconds ahead of the
/// identity provider's would otherwise present a token "not valid yet" and fail
/// every sign-in until the clocks agree.
const CLOCK_SKEW_SECONDS: u64 = 60;

/// The claims of a client assertion: `iss` = `sub` = client id, `aud` = the token
/// endpoint, issued a minute back and valid for five minutes from now (Okta
/// accepts at most one hour between `iat` and `exp`).
pub(crate) fn assertion_claims(
    client_id: &str,
    audience: &str,
    now_unix: u64,
) -> Result<serde_json::Value, DirectoryError> {
    let issued = now_unix.saturating_sub(CLOCK_SKEW_SECONDS);
    Ok(json!({
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": issued,
        "nbf": issued,
        "exp": now_unix + 300,
        "jti": random_id()?,
    }))
}

/// The base64url SHA-1 thumbprint of a PEM certificate: the `x5t` header Entra uses
/// to find the certificate credential.
pub(crate) fn certificate_thumbprint(pem: &[u8], what: &str) -> Result<String, DirectoryError> {
    let der = CertificateDer::from_pem_slice(pem)
        .map_err(|e| DirectoryError::Settings(format!("{what}: not a PEM certificate: {e}")))?;
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der.as_ref());
    Ok(URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn an_assertion_is_valid_from_a_minute_back_for_five_minutes_ahead() {
        let now = 1_800_000_000;
        let claims =
            assertion_claims("0oa1", "https://acme.okta.com/oauth2/v1/token", now).unwrap();
        assert_eq!(claims["iat"], now - 60);
        assert_eq!(claims["nbf"], now - 60);
        assert_eq!(claims["exp"], now + 300);
        assert_eq!(claims["iss"], "0oa1");
        assert_eq!(claims["sub"], "0oa1");
        let other = assertion_claims("0oa1", "x", now).unwrap();
        assert_ne!(claims["jti"], other["jti"], "a fresh id every time");
    }
}
