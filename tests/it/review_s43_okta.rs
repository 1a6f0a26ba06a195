//! Review (s43) of the Okta connector as the engineer running it against a 20k-user
//! org sees it: what a refused read or token request says, and whether it carries
//! what an Okta support case needs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::directory::{OktaAuth, OktaSource, Secret};
use serde_json::json;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::okta::{LinkStyle, settings, small_org, ssws};

/// What Okta sets on every answer, and what its support and System Log
/// (`debugContext.debugData.requestId`) find a request by.
const REQUEST_ID: &str = "aBcD3fGhIjKlMnOpQrStUvWxAAAB4";
const ERROR_ID: &str = "oaeQ1z2Y3x4W5v6U7t8S9r0qP";

fn service_app() -> OktaAuth {
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

/// Okta's error body carries `errorId` ("can be used by Okta Support to help with
/// troubleshooting") and every answer an `X-Okta-Request-Id`; both were dropped,
/// and the error said only the code and summary. They end the error, after the
/// permission hint that fills the detail, so its length limit never cuts them.
#[tokio::test]
async fn an_okta_error_names_its_error_id_and_request_id() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/api/v1/groups/[^/]+/users$"))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("x-okta-request-id", REQUEST_ID)
                .set_body_json(json!({
                    "errorCode": "E0000006",
                    "errorSummary": "You do not have permission to perform the requested action",
                    "errorLink": "E0000006",
                    "errorId": ERROR_ID,
                    "errorCauses": []
                })),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    small_org(LinkStyle::SeparateLines).mount(&server).await;
    let text = OktaSource::new(settings(&server, ssws()))
        .snapshot()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("HTTP 403 (E0000006)")
            && text.contains("API token")
            && text.ends_with(&format!(
                "(Okta errorId {ERROR_ID}, X-Okta-Request-Id {REQUEST_ID})"
            )),
        "{text}"
    );
}

/// Okta has required DPoP by default for API service apps created since 2024:
/// the token endpoint refuses a request without a DPoP proof with 400
/// `invalid_dpop_proof`, "The DPoP proof JWT header is missing.". Since session
/// 44 seatwarden sends the request again with a proof (`review_s44_okta_dpop`);
/// an endpoint that still says the header is missing (a proxy dropping it) ends
/// in an error that says what to check and names the request id; not retried.
#[tokio::test]
async fn a_token_request_refused_for_want_of_dpop_says_what_to_check() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/v1/token"))
        .respond_with(
            ResponseTemplate::new(400)
                .insert_header("x-okta-request-id", REQUEST_ID)
                .set_body_json(json!({
                    "error": "invalid_dpop_proof",
                    "error_description": "The DPoP proof JWT header is missing."
                })),
        )
        .mount(&server)
        .await;
    small_org(LinkStyle::SeparateLines).mount(&server).await;
    let error = OktaSource::new(settings(&server, service_app()))
        .snapshot()
        .await
        .unwrap_err();
    assert!(!error.is_transient());
    let text = error.to_string();
    assert!(
        text.contains("HTTP 400 (invalid_dpop_proof)")
            && text.contains("Okta refused seatwarden's DPoP proof")
            && text.contains("a proxy between seatwarden and Okta")
            && text.ends_with(&format!("(Okta X-Okta-Request-Id {REQUEST_ID})")),
        "{text}"
    );
    let token_requests = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == "/oauth2/v1/token")
        .count();
    // The three listings that start together: the first asks without a proof
    // and once with one, the others with one at once (retried, each would ask
    // three times).
    assert!(token_requests <= 4, "{token_requests} token requests");
}

/// Okta puts what a 400 refused in `errorCauses`, not in its summary ("Invalid
/// search criteria."): a refused `filter=lastUpdated gt "…"` of the sweep said
/// only that, not which value. The causes follow the summary.
#[tokio::test]
async fn an_okta_400_names_its_error_causes() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/users"))
        .and(wiremock::matchers::query_param_contains(
            "filter",
            "lastUpdated",
        ))
        .respond_with(
            ResponseTemplate::new(400)
                .insert_header("x-okta-request-id", REQUEST_ID)
                .set_body_json(json!({
                    "errorCode": "E0000031",
                    "errorSummary": "Invalid search criteria.",
                    "errorLink": "E0000031",
                    "errorId": ERROR_ID,
                    "errorCauses": [
                        {"errorSummary": "Invalid value for lastUpdated: 2026-11-30T00:55:00.000Z"}
                    ]
                })),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    small_org(LinkStyle::SeparateLines).mount(&server).await;
    let cursor = "okta-v1:2026-11-30T01:00:00.000Z";
    // An old cursor reads in full once; the next call is a delta.
    let source = OktaSource::new(settings(&server, ssws()));
    let first = source.changes_since(Some(cursor)).await.unwrap();
    let seatwarden::directory::DirectoryChanges::Full {
        cursor: Some(next), ..
    } = first
    else {
        panic!("expected a full read, got {first:?}");
    };
    let text = source
        .changes_since(Some(&next))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains(
            "HTTP 400 (E0000031): Invalid search criteria. \
             (Invalid value for lastUpdated: 2026-11-30T00:55:00.000Z)"
        ),
        "{text}"
    );
}
