//! Review (s42) of directory reads that could loop or see too little: an LDAP
//! server that hands back a paged-results cookie it already gave.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::ldap_ad::{CookieLoop, looping_cookie, source, start_fake};

/// Reads the fake, failing the test if the read has not ended within 20 s (a
/// loop reads for ever).
async fn ldap_read_error(page: CookieLoop) -> String {
    let (port, _) = start_fake(looping_cookie(page)).await;
    let read = tokio::time::timeout(Duration::from_secs(20), source(port).snapshot())
        .await
        .expect("the read never ended: it follows the repeated cookie for ever");
    let error = read.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    error.to_string()
}

/// A page that hands its own cookie back with the same entries again (a buggy
/// proxy replaying an answer): before, the search asked for the same page for
/// ever, holding each copy of its entries.
#[tokio::test]
async fn an_ldap_page_repeated_under_its_own_cookie_fails_naming_the_entry() {
    let text = ldap_read_error(CookieLoop::SameEntries).await;
    assert!(text.contains("ldap://127.0.0.1:"), "{text}");
    assert!(
        text.contains("OU=Staff,DC=corp,DC=example,DC=com"),
        "{text}"
    );
    assert!(text.contains("CN=Cy"), "{text}");
    assert!(text.contains("twice"), "{text}");
}

/// A page with no entry that hands its own cookie back: nothing repeats but
/// the cookie, which is the loop.
#[tokio::test]
async fn an_ldap_empty_page_handing_its_cookie_back_fails_naming_the_cookie() {
    let text = ldap_read_error(CookieLoop::NoEntries).await;
    assert!(text.contains("ldap://127.0.0.1:"), "{text}");
    assert!(
        text.contains("OU=Staff,DC=corp,DC=example,DC=com"),
        "{text}"
    );
    assert!(text.contains("cookie"), "{text}");
    assert!(text.contains("page-2"), "{text}");
}
