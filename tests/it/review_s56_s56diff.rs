//! Review (s56) of the session's changes as a whole: how they meet real
//! providers, real configurations and each other.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::retry::RetryPolicy;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::review_s39_scim::client_with;

// ------------------------------------------- writes answered as text/html

/// Frameworks label answers `text/html` unless told otherwise: Rails' `head
/// :no_content` answers a DELETE 204 with `Content-Type: text/html` and no
/// body, and a PHP SCIM server that does not set its type answers JSON as
/// `text/html`. Neither is a web page: a write so answered was made. Taken for
/// a firewall's block page, every deactivation, membership change and delete
/// failed ("HTTP 204 with an HTML page"), and the breaker opened on a
/// workspace that had made them all.
#[tokio::test]
async fn a_write_answered_as_text_html_without_a_page_is_made() {
    let server = MockServer::start().await;
    let html_type = "text/html; charset=utf-8";
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(204).insert_header("content-type", html_type))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"u1","userName":"ada@example.com","active":false}"#,
            html_type,
        ))
        .mount(&server)
        .await;
    let client = client_with(&server, |s| s.retry = RetryPolicy::immediate(1));
    client.delete_account("u1").await.unwrap();
    client.set_active("u1", false).await.unwrap();
}
