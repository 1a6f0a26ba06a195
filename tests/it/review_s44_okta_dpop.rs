//! Review (s44): an Okta service app that requires DPoP (RFC 9449), Okta's default
//! for API service apps made in the Admin Console. The fake Okta verifies every
//! proof as Okta does: `typ`, `alg`, the `jwk`, the ES256 signature with that
//! key, `htm`/`htu`/`iat`, `ath` against the token, the nonce it handed out, and
//! that no `jti` (of a proof or a client assertion) comes twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use seatwarden::directory::{OktaAuth, OktaSource, Secret};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::okta::{
    LinkStyle, expected_small_org, form, settings, small_org, statuses, verify_assertion,
};

pub(crate) fn service_app() -> OktaAuth {
    OktaAuth::PrivateKeyJwt {
        client_id: "0oa-service-app".into(),
        key_id: None,
        private_key: Secret::File {
            key: "directory.private_key_file",
            path: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/keys/test-rsa-pkcs8.pem"),
        },
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn decode(part: &str) -> Result<Value, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| format!("not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))
}

/// The `ath` of `token`: base64url(SHA-256(token)).
fn ath(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

/// Checks `req`'s `DPoP` header as Okta does, for `htm` and `htu`; returns its
/// `jwk` and claims. The signature is verified with the key the `jwk` names.
fn verify_proof(req: &Request, htm: &str, htu: &str) -> Result<(Value, Value), String> {
    let proof = req
        .headers
        .get_all("dpop")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    let [proof] = proof.as_slice() else {
        return Err(format!("{} DPoP headers", proof.len()));
    };
    let parts: Vec<&str> = proof.split('.').collect();
    let [head, body, signature] = parts.as_slice() else {
        return Err("not a JWS".into());
    };
    let (header, claims) = (decode(head)?, decode(body)?);
    if header["typ"] != "dpop+jwt" || header["alg"] != "ES256" {
        return Err(format!("header {header}"));
    }
    let jwk = header["jwk"].clone();
    if jwk["kty"] != "EC" || jwk["crv"] != "P-256" || jwk.get("d").is_some() {
        return Err(format!("jwk {jwk}"));
    }
    let coordinate = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(jwk[name].as_str().unwrap_or_default())
            .map_err(|e| format!("jwk {name}: {e}"))
    };
    let mut point = vec![4u8];
    point.extend(coordinate("x")?);
    point.extend(coordinate("y")?);
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| format!("signature: {e}"))?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &point)
        .verify(format!("{head}.{body}").as_bytes(), &signature)
        .map_err(|_| "the signature does not verify with the jwk".to_owned())?;
    if claims["htm"] != htm || claims["htu"] != htu {
        return Err(format!(
            "htm/htu {} {} for {htm} {htu}",
            claims["htm"], claims["htu"]
        ));
    }
    let iat = claims["iat"].as_u64().ok_or("no iat")?;
    if now().abs_diff(iat) > 60 {
        return Err(format!("iat {iat} is not now"));
    }
    if claims["jti"].as_str().is_none_or(|j| j.len() < 16) {
        return Err("no jti".into());
    }
    Ok((jwk, claims))
}

/// What the fake Okta saw and handed out.
#[derive(Default)]
pub(crate) struct Seen {
    /// Every `jti` of a proof, and of a client assertion.
    proof_jtis: HashSet<String>,
    assertion_jtis: HashSet<String>,
    /// Token requests: (had a proof, its nonce).
    pub(crate) token_requests: Vec<(bool, Option<String>)>,
    /// The nonce the token endpoint wants now.
    nonce: Option<String>,
    nonces_issued: usize,
    /// Tokens issued and the jwk each is bound to.
    tokens: Vec<(String, Value)>,
    /// API requests: (Authorization, proof claims when it verified).
    pub(crate) api_requests: Vec<(String, Option<Value>)>,
    /// Why a proof was refused.
    pub(crate) refusals: Vec<String>,
}

#[derive(Clone, Copy)]
pub(crate) struct TokenEndpoint {
    /// The app requires DPoP.
    pub(crate) requires_dpop: bool,
    /// A `use_dpop_nonce` for every proof whose nonce is not the current one
    /// (Okta's org authorization server does so).
    pub(crate) nonces: bool,
    /// A new nonce for every request, so no proof ever carries the current one.
    pub(crate) rotate_always: bool,
    /// `expires_in`.
    pub(crate) lifetime: u64,
}

pub(crate) const APP: TokenEndpoint = TokenEndpoint {
    requires_dpop: true,
    nonces: true,
    rotate_always: false,
    lifetime: 3600,
};

fn oauth_error(error: &str, description: &str) -> ResponseTemplate {
    ResponseTemplate::new(400)
        .insert_header("x-okta-request-id", "req-dpop-1")
        .set_body_json(json!({"error": error, "error_description": description}))
}

/// Mounts Okta's token endpoint as `endpoint` says.
async fn mount_token_endpoint(
    server: &MockServer,
    endpoint: TokenEndpoint,
    seen: Arc<Mutex<Seen>>,
) {
    let token_url = format!("{}/oauth2/v1/token", server.uri());
    Mock::given(method("POST"))
        .and(path("/oauth2/v1/token"))
        .respond_with(move |req: &Request| {
            let mut seen = seen.lock().unwrap();
            let (_, assertion) = verify_assertion(&form(req)["client_assertion"]);
            let assertion_jti = assertion["jti"].as_str().unwrap().to_owned();
            if !seen.assertion_jtis.insert(assertion_jti) {
                return oauth_error(
                    "invalid_client",
                    "The client_assertion token has already been used.",
                );
            }
            let has_proof = req.headers.get("dpop").is_some();
            if !has_proof {
                seen.token_requests.push((false, None));
                if endpoint.requires_dpop {
                    return oauth_error(
                        "invalid_dpop_proof",
                        "The DPoP proof JWT header is missing.",
                    );
                }
                let n = seen.tokens.len() + 1;
                let token = format!("bearer-token-{n}");
                seen.tokens.push((token.clone(), Value::Null));
                return ResponseTemplate::new(200).set_body_json(json!({
                    "token_type": "Bearer", "expires_in": endpoint.lifetime,
                    "access_token": token, "scope": "okta.users.read okta.groups.read"
                }));
            }
            let (jwk, claims) = match verify_proof(req, "POST", &token_url) {
                Ok(verified) => verified,
                Err(why) => {
                    seen.refusals.push(why.clone());
                    return oauth_error("invalid_dpop_proof", &why);
                }
            };
            let nonce = claims["nonce"].as_str().map(str::to_owned);
            seen.token_requests.push((true, nonce.clone()));
            if !seen
                .proof_jtis
                .insert(claims["jti"].as_str().unwrap().to_owned())
            {
                seen.refusals.push("a proof jti came twice".into());
                return oauth_error("invalid_dpop_proof", "The DPoP proof jti has been used.");
            }
            if endpoint.nonces && (endpoint.rotate_always || nonce.is_none() || nonce != seen.nonce)
            {
                seen.nonces_issued += 1;
                let fresh = format!("nonce-{}", seen.nonces_issued);
                seen.nonce = Some(fresh.clone());
                return oauth_error(
                    "use_dpop_nonce",
                    "Authorization server requires nonce in DPoP proof.",
                )
                .insert_header("DPoP-Nonce", fresh.as_str());
            }
            let n = seen.tokens.len() + 1;
            let token = format!("dpop-token-{n}");
            seen.tokens.push((token.clone(), jwk));
            ResponseTemplate::new(200).set_body_json(json!({
                "token_type": "DPoP", "expires_in": endpoint.lifetime,
                "access_token": token, "scope": "okta.users.read okta.groups.read"
            }))
        })
        .mount(server)
        .await;
}

/// Okta's API as a resource server: a request whose DPoP-bound token comes
/// without a valid proof, bound to that token's key and this request, is
/// refused with 401 before it reaches the fake org. With `nonce`, a proof must
/// also carry that nonce (Okta's API does not ask for one today; RFC 9449 §9
/// lets it).
struct ResourceCheck {
    base: String,
    seen: Arc<Mutex<Seen>>,
    nonce: Option<&'static str>,
}

impl ResourceCheck {
    /// `None` when the request may pass; else the `WWW-Authenticate` error.
    fn refusal(&self, req: &Request) -> Option<&'static str> {
        let mut seen = self.seen.lock().unwrap();
        let authorization = req
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let Some(token) = authorization.strip_prefix("DPoP ") else {
            let bearer = authorization.strip_prefix("Bearer ").unwrap_or_default();
            let bound = seen
                .tokens
                .iter()
                .any(|(t, jwk)| t == bearer && !jwk.is_null());
            seen.api_requests.push((authorization.clone(), None));
            return bound.then_some("invalid_token");
        };
        let htu = format!("{}{}", self.base, req.url.path());
        let checked = verify_proof(req, "GET", &htu).and_then(|(jwk, claims)| {
            let bound = seen
                .tokens
                .iter()
                .find(|(t, _)| t == token)
                .map(|(_, k)| k.clone());
            if bound.as_ref() != Some(&jwk) {
                return Err("the proof's key is not the token's".into());
            }
            if claims["ath"] != ath(token) {
                return Err(format!("ath {} for {token}", claims["ath"]));
            }
            if !seen
                .proof_jtis
                .insert(claims["jti"].as_str().unwrap().to_owned())
            {
                return Err("a proof jti came twice".into());
            }
            Ok(claims)
        });
        match checked {
            Ok(claims) => {
                let nonce_ok = self.nonce.is_none_or(|n| claims["nonce"] == n);
                seen.api_requests
                    .push((authorization.clone(), Some(claims)));
                (!nonce_ok).then_some("use_dpop_nonce")
            }
            Err(why) => {
                seen.refusals.push(why);
                seen.api_requests.push((authorization.clone(), None));
                Some("invalid_dpop_proof")
            }
        }
    }
}

/// The request's `DPoP` header, or its `Authorization` when it has none: what
/// the responder finds the check's verdict by.
fn request_key(req: &Request) -> String {
    let header = |name: &str| {
        req.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    header("dpop")
        .or_else(|| header("authorization"))
        .unwrap_or_default()
}

/// Matches the API requests [`ResourceCheck`] refuses (once per request, as a
/// proof's `jti` is spent when checked); the verdict is kept for the answer.
struct Refused {
    check: ResourceCheck,
    verdicts: Arc<Mutex<std::collections::HashMap<String, &'static str>>>,
}

impl wiremock::Match for Refused {
    fn matches(&self, req: &Request) -> bool {
        if req.method != wiremock::http::Method::GET || !req.url.path().starts_with("/api/") {
            return false;
        }
        let Some(error) = self.check.refusal(req) else {
            return false;
        };
        self.verdicts
            .lock()
            .unwrap()
            .insert(request_key(req), error);
        true
    }
}

/// Mounts `check` ahead of the fake org: it answers what it refuses with 401
/// `WWW-Authenticate: DPoP error="…"` (and the nonce it wants, for
/// `use_dpop_nonce`); the rest reaches the org.
async fn mount_resource_check(server: &MockServer, check: ResourceCheck) {
    let nonce = check.nonce;
    let verdicts = Arc::new(Mutex::new(std::collections::HashMap::new()));
    let answers = verdicts.clone();
    Mock::given(Refused { check, verdicts })
        .respond_with(move |req: &Request| {
            let error = answers
                .lock()
                .unwrap()
                .get(&request_key(req))
                .copied()
                .unwrap_or("invalid_token");
            let mut response = ResponseTemplate::new(401)
                .insert_header(
                    "www-authenticate",
                    format!("DPoP algs=\"ES256\", error=\"{error}\"").as_str(),
                )
                .set_body_json(json!({
                    "errorCode": error,
                    "errorSummary": "The access token is invalid.",
                    "errorLink": error,
                    "errorId": "oaeDpop1",
                    "errorCauses": []
                }));
            if let (Some(nonce), "use_dpop_nonce") = (nonce, error) {
                response = response.insert_header("DPoP-Nonce", nonce);
            }
            response
        })
        .with_priority(1)
        .mount(server)
        .await;
}

/// A fake Okta org behind `endpoint`, its API checking proofs (`api_nonce`: the
/// nonce the API wants).
pub(crate) async fn org(
    endpoint: TokenEndpoint,
    api_nonce: Option<&'static str>,
) -> (MockServer, Arc<Mutex<Seen>>) {
    let server = MockServer::start().await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    mount_token_endpoint(&server, endpoint, seen.clone()).await;
    mount_resource_check(
        &server,
        ResourceCheck {
            base: server.uri(),
            seen: seen.clone(),
            nonce: api_nonce,
        },
    )
    .await;
    small_org(LinkStyle::SeparateLines).mount(&server).await;
    (server, seen)
}

/// The service app requires DPoP: the first token request (no proof) is
/// refused, the next carries a proof and draws Okta's nonce, the third carries
/// the nonce and gets a DPoP-bound token, each with a fresh client assertion.
/// Every API request, each next page too, then sends `Authorization: DPoP` and
/// a proof of its own that verifies. A later token request of the same instance
/// sends a proof with the latest nonce from the start.
#[tokio::test]
async fn a_service_app_that_requires_dpop_reads_with_bound_tokens_and_verified_proofs() {
    // Refreshed half its lifetime after it was fetched: 6 s, so that each
    // snapshot below (dozens of signed requests) ends long before, even on a
    // loaded machine (at 1 s, a slow first snapshot drew a refresh of its own).
    let endpoint = TokenEndpoint {
        lifetime: 12,
        ..APP
    };
    let (server, seen) = org(endpoint, None).await;
    let source = OktaSource::new(settings(&server, service_app()));
    let snapshot = source.snapshot().await.unwrap();
    assert_eq!(statuses(&snapshot), expected_small_org());
    {
        let seen = seen.lock().unwrap();
        assert!(seen.refusals.is_empty(), "{:?}", seen.refusals);
        assert_eq!(
            seen.token_requests,
            vec![
                (false, None),
                (true, None),
                (true, Some("nonce-1".to_owned()))
            ]
        );
        assert_eq!(seen.tokens.len(), 1);
        // Every API request went with the bound token and a verified proof; the
        // next pages (`after=…`) among them, with their own htu.
        assert!(seen.api_requests.len() > 5);
        for (authorization, claims) in &seen.api_requests {
            assert_eq!(authorization, "DPoP dpop-token-1");
            let claims = claims.as_ref().expect("a verified proof");
            assert!(claims["htu"].as_str().unwrap().contains("/api/v1/"));
        }
    }
    let requests = server.received_requests().await.unwrap();
    assert!(
        requests
            .iter()
            .any(|r| r.url.path() == "/api/v1/users"
                && r.url.query().unwrap_or("").contains("after=")),
        "a next page was read"
    );
    // The token is refreshed after 6 s: one request, with a proof and the nonce
    // from the start.
    tokio::time::sleep(Duration::from_millis(6200)).await;
    source.snapshot().await.unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.refusals.is_empty(), "{:?}", seen.refusals);
    assert_eq!(seen.token_requests.len(), 4, "{:?}", seen.token_requests);
    assert_eq!(seen.token_requests[3], (true, Some("nonce-1".to_owned())));
    assert_eq!(
        seen.api_requests.last().map(|(a, _)| a.as_str()),
        Some("DPoP dpop-token-2")
    );
}

/// A resource server that wants a nonce answers 401 `WWW-Authenticate: DPoP
/// error="use_dpop_nonce"` with it in `DPoP-Nonce`: the request is sent again
/// once with it and a fresh proof, and the token is not dropped for it.
#[tokio::test]
async fn an_api_401_use_dpop_nonce_is_resent_with_the_nonce() {
    let (server, seen) = org(
        TokenEndpoint {
            nonces: false,
            ..APP
        },
        Some("api-nonce-7"),
    )
    .await;
    let snapshot = OktaSource::new(settings(&server, service_app()))
        .snapshot()
        .await
        .unwrap();
    assert_eq!(statuses(&snapshot), expected_small_org());
    let seen = seen.lock().unwrap();
    assert!(seen.refusals.is_empty(), "{:?}", seen.refusals);
    // One token: the nonce challenge is not an expired token.
    assert_eq!(seen.tokens.len(), 1, "{:?}", seen.token_requests);
    let nonces: Vec<Option<&str>> = seen
        .api_requests
        .iter()
        .map(|(_, claims)| claims.as_ref().unwrap()["nonce"].as_str())
        .collect();
    // Refused without the nonce at first (the listings that start together),
    // with it from then on.
    assert!(nonces.contains(&None), "{nonces:?}");
    let first_with = nonces.iter().position(Option::is_some).unwrap();
    assert!(
        nonces[first_with..]
            .iter()
            .all(|n| *n == Some("api-nonce-7")),
        "{nonces:?}"
    );
}

/// An app that does not require DPoP keeps plain Bearer requests: no proof on
/// the token request, none on the API's.
#[tokio::test]
async fn an_app_without_dpop_gets_plain_bearer_requests() {
    let (server, seen) = org(
        TokenEndpoint {
            requires_dpop: false,
            ..APP
        },
        None,
    )
    .await;
    let snapshot = OktaSource::new(settings(&server, service_app()))
        .snapshot()
        .await
        .unwrap();
    assert_eq!(statuses(&snapshot), expected_small_org());
    assert_eq!(seen.lock().unwrap().token_requests, vec![(false, None)]);
    let requests = server.received_requests().await.unwrap();
    assert!(requests.iter().all(|r| r.headers.get("dpop").is_none()));
    let api: Vec<_> = requests
        .iter()
        .filter(|r| r.url.path().starts_with("/api/"))
        .collect();
    assert!(!api.is_empty());
    assert!(
        api.iter()
            .all(|r| r.headers.get("authorization").unwrap() == "Bearer bearer-token-1")
    );
}

/// A token endpoint that refuses every proof, or wants a new nonce every time,
/// ends in an error that names the endpoint and what is left to check, after a
/// bounded number of requests: a proof after the first refusal and one resend
/// with a nonce per token fetch, the later fetches sending a proof at once.
#[tokio::test]
async fn a_refused_proof_or_a_nonce_asked_again_names_the_endpoint_and_stops() {
    for (endpoint, expected, most) in [
        (
            TokenEndpoint {
                rotate_always: true,
                ..APP
            },
            "HTTP 400 (use_dpop_nonce)",
            // Three listings start together: 3 for the first, 2 for each other.
            7,
        ),
        (
            TokenEndpoint {
                nonces: false,
                ..APP
            },
            "HTTP 400 (invalid_dpop_proof)",
            4,
        ),
    ] {
        let server = MockServer::start().await;
        let seen = Arc::new(Mutex::new(Seen::default()));
        if matches!(expected, "HTTP 400 (invalid_dpop_proof)") {
            // Okta refuses the proof itself (a proxy dropping the header, a
            // clock far off).
            Mock::given(method("POST"))
                .and(path("/oauth2/v1/token"))
                .respond_with(oauth_error(
                    "invalid_dpop_proof",
                    "The DPoP proof JWT header is missing.",
                ))
                .mount(&server)
                .await;
        } else {
            mount_token_endpoint(&server, endpoint, seen.clone()).await;
        }
        small_org(LinkStyle::SeparateLines).mount(&server).await;
        let error = OktaSource::new(settings(&server, service_app()))
            .snapshot()
            .await
            .unwrap_err();
        assert!(!error.is_transient(), "{error}");
        let text = error.to_string();
        assert!(
            text.contains("POST /oauth2/v1/token")
                && text.contains(expected)
                && text.contains("DPoP and DPoP-Nonce headers")
                && text.ends_with("(Okta X-Okta-Request-Id req-dpop-1)"),
            "{text}"
        );
        let token_requests = server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.url.path() == "/oauth2/v1/token")
            .count();
        assert!(
            (2..=most).contains(&token_requests),
            "{expected}: {token_requests}"
        );
    }
}

/// The API refusing a proof (401 `WWW-Authenticate: DPoP
/// error="invalid_dpop_proof"`) names the endpoint and what to check, after one
/// new token.
#[tokio::test]
async fn an_api_refusing_the_proof_names_the_endpoint() {
    let server = MockServer::start().await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    mount_token_endpoint(&server, APP, seen.clone()).await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header(
                    "www-authenticate",
                    "DPoP algs=\"ES256\", error=\"invalid_dpop_proof\", \
                     error_description=\"DPoP proof validation failed\"",
                )
                .insert_header("x-okta-request-id", "req-api-1"),
        )
        .mount(&server)
        .await;
    let error = OktaSource::new(settings(&server, service_app()))
        .snapshot()
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("GET /api/v1/")
            && text.contains("HTTP 401")
            && text.contains("Okta refused seatwarden's DPoP proof")
            && !text.contains("dpop-token-"),
        "{text}"
    );
}
