//! Review (s56) of the workspace SCIM client against what real service providers
//! and what stands in front of them answer (/work/shared/reference/apis.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::retry::RetryPolicy;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::review_s39_scim::{client_with, mount_empty_groups, no_progress};

// ------------------------------------------------------ web pages as errors

/// A gateway's error page as Cloudflare serves it in front of a SaaS: kilobytes
/// of markup and styles, the title saying what happened, the request echoed.
fn gateway_error_page(status: u16, title: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(
        format!(
            "<!DOCTYPE html>\n<!--[if lt IE 7]> <html class=\"no-js ie6 oldie\" lang=\"en-US\"> \
             <![endif]-->\n<html lang=\"en-US\"><head>\n<title>{title}</title>\n\
             <meta charset=\"UTF-8\" /><style>{}</style></head>\n<body><h1>{title}</h1>\
             <pre>GET /scim/v2/Users\nAuthorization: Bearer t0ken</pre></body></html>",
            "body{margin:0;padding:0;font-family:sans-serif}".repeat(100)
        ),
        "text/html; charset=UTF-8",
    )
}

/// A 502 (and a WAF's 403) whose body is a web page is named by the page's
/// title and for what it is; the error quoted the first 300 characters of the
/// page (its doctype, a conditional comment and styles), which said nothing of
/// what went wrong, on every retry in the log.
#[tokio::test]
async fn a_gateways_error_page_is_named_by_its_title_not_quoted() {
    for (status, title) in [
        (502, "www.taskade.com | 502: Bad gateway"),
        (403, "Attention Required! | Cloudflare"),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/scim/v2/Users"))
            .respond_with(gateway_error_page(status, title))
            .mount(&server)
            .await;
        mount_empty_groups(&server).await;
        let client = client_with(&server, |s| s.retry = RetryPolicy::immediate(1));
        let error = client.snapshot(&no_progress).await.unwrap_err();
        assert_eq!(error.status(), Some(status), "{error}");
        let text = error.to_string();
        assert!(
            text.starts_with(&format!(
                "GET /Users?startIndex=1&count=100: HTTP {status}: an HTML page ({title:?}), \
                 not SCIM JSON: a web server, proxy, firewall or gateway answered instead of \
                 the SCIM service"
            )),
            "{text}"
        );
        assert!(!text.contains('<'), "{text}");
        assert!(!text.contains("t0ken"), "{text}");
    }
}

/// A web application firewall in front of the workspace (F5 BIG-IP ASM's
/// default blocking page) answers a request it blocks with 200 and a page
/// "Request Rejected". Answered so, a deactivation was taken as sent: only its
/// verification failed, "account u1 is still active", with nothing to say why.
/// A write answered with a web page fails, naming the page; so does a create.
#[tokio::test]
async fn a_write_answered_200_with_a_firewalls_block_page_fails_naming_it() {
    let server = MockServer::start().await;
    let blocked = ResponseTemplate::new(200).set_body_raw(
        "<html><head><title>Request Rejected</title></head><body>The requested URL was \
         rejected. Please consult with your administrator.<br><br>Your support ID is: \
         1234567890123456789<br><br><a href='javascript:history.back();'>[Go Back]</a>\
         </body></html>",
        "text/html; charset=utf-8",
    );
    Mock::given(method("PATCH"))
        .respond_with(blocked.clone())
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(blocked)
        .mount(&server)
        .await;
    let client = client_with(&server, |s| s.retry = RetryPolicy::immediate(1));
    let expected = "HTTP 200 with an HTML page (\"Request Rejected\"), not SCIM JSON: a web \
                    server, proxy, firewall or gateway answered instead of the SCIM service";
    let error = client.set_active("u1", false).await.unwrap_err();
    let text = error.to_string();
    assert!(text.starts_with("PATCH /Users/u1: "), "{text}");
    assert!(text.contains(expected), "{text}");
    let error = client
        .remove_members("g1", &["u1".to_owned()])
        .await
        .unwrap_err();
    assert!(error.to_string().contains(expected), "{error}");
    let error = client.delete_account("u1").await.unwrap_err();
    assert!(error.to_string().contains(expected), "{error}");
    // Not retried: the firewall blocks the request, not the moment.
    let sent = server.received_requests().await.unwrap().len();
    assert_eq!(sent, 3);
}
