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
    /// `what` names the key and its file for errors
    /// (`directory.private_key_file /etc/…`: [`super::Secret::named`]).
    ///
    /// A key encrypted with a passphrase (`BEGIN ENCRYPTED PRIVATE KEY`, or a
    /// PKCS#1 key with a `Proc-Type: 4,ENCRYPTED` header) is said to be one:
    /// the PEM reader skips it as no key at all. So is a key of another
    /// algorithm in PKCS#8 (EC, Ed25519), which ring calls `WrongAlgorithm`.
    pub fn from_pem(pem: &[u8], what: &str) -> Result<SigningKey, DirectoryError> {
        const RSA_NEEDED: &str = "an RSA key is needed (PKCS#8 or PKCS#1 PEM) for RS256";
        let text = String::from_utf8_lossy(pem);
        if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(DirectoryError::Settings(format!(
                "{what}: the key is encrypted with a passphrase, which seatwarden cannot \
                 enter: store it unencrypted (`openssl pkey -in KEY -out KEY.plain`), \
                 readable by the service's user only"
            )));
        }
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
            DirectoryError::Settings(format!(
                "{what}: not a PEM private key (-----BEGIN PRIVATE KEY----- or \
                 -----BEGIN RSA PRIVATE KEY-----): {e}"
            ))
        })?;
        let pair = match &der {
            PrivateKeyDer::Pkcs8(key) => RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(key) => RsaKeyPair::from_der(key.secret_pkcs1_der()),
            _ => return Err(DirectoryError::Settings(format!("{what}: {RSA_NEEDED}"))),
        }
        .map_err(|e| {
            DirectoryError::Settings(match e.to_string().as_str() {
                "WrongAlgorithm" => format!("{what}: {RSA_NEEDED}; this key is of another kind"),
                _ => format!("{what}: unusable RSA key: {e}"),
            })
        })?;
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

    /// `der` as PEM with `label`.
    fn pem(label: &str, der: &[u8]) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    /// A key encrypted with a passphrase is said to be one, naming the key and
    /// its file, and not as "no items found".
    #[test]
    fn an_encrypted_key_is_named_as_encrypted() {
        let what = "directory.private_key_file /etc/seatwarden/key.pem";
        for text in [
            pem("ENCRYPTED PRIVATE KEY", b"not really a key"),
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\n\
             AAAA\n-----END RSA PRIVATE KEY-----\n"
                .to_owned(),
        ] {
            let Err(error) = SigningKey::from_pem(text.as_bytes(), what) else {
                panic!("an encrypted key is refused");
            };
            let error = error.to_string();
            assert!(error.contains(what), "{error}");
            assert!(error.contains("encrypted with a passphrase"), "{error}");
        }
        let Err(error) = SigningKey::from_pem(b"just text", what) else {
            panic!("text is refused");
        };
        assert!(
            error.to_string().contains("not a PEM private key"),
            "{error}"
        );
    }

    /// An EC key in PKCS#8 (ring: `WrongAlgorithm`) is refused as not RSA.
    #[test]
    fn a_key_of_another_algorithm_is_refused_as_not_rsa() {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let text = pem("PRIVATE KEY", pkcs8.as_ref());
        let Err(error) = SigningKey::from_pem(text.as_bytes(), "directory.private_key_file") else {
            panic!("an EC key is refused");
        };
        assert!(
            error.to_string().contains("an RSA key is needed"),
            "{error}"
        );
    }

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
