//! Adversarial review of the directory connectors (session 37): ways a read could
//! miss people, or report someone gone who is not, without an error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::directory::{DirectoryChanges, EntraSource};
use serde_json::json;
use wiremock::MockServer;

use crate::entra::{cursor, mount_delta, secret, settings, small_tenant};

/// Graph may return one object more than once in a delta round, and its last
/// occurrence is its state: a user soft-deleted (`@removed`, reason "changed")
/// and restored from the recycle bin before the round was read comes first as
/// removed, then as a user. The user exists and is read back: reported as removed
/// too, the sweep would deprovision them.
#[tokio::test]
async fn an_entra_user_removed_then_restored_in_one_delta_round_is_not_removed() {
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    mount_delta(
        &server,
        "users",
        "U1",
        vec![
            vec![json!({
                "@odata.type": "#microsoft.graph.user",
                "id": "a1",
                "@removed": {"reason": "changed"}
            })],
            vec![
                json!({"@odata.type": "#microsoft.graph.user", "id": "a1", "accountEnabled": true}),
            ],
        ],
    )
    .await;
    mount_delta(&server, "groups", "G1", vec![vec![]]).await;
    let source = EntraSource::new(settings(&server, secret()));
    let changes = source
        .changes_since(Some(&cursor(&server, "U1", "G1")))
        .await
        .unwrap();
    let DirectoryChanges::Delta {
        changed, removed, ..
    } = changes
    else {
        panic!("expected a delta, got {changes:?}");
    };
    assert!(
        removed.is_empty(),
        "a1 exists but is reported removed: {removed:?}"
    );
    assert_eq!(
        changed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec!["a1"]
    );
}

/// The other order: a user changed, then deleted, in one round. The last state
/// is gone, and the user is not found when read back: removed.
#[tokio::test]
async fn an_entra_user_changed_then_deleted_in_one_delta_round_is_removed() {
    let server = MockServer::start().await;
    let mut tenant = small_tenant();
    tenant.users.retain(|u| u["id"] != "a2");
    for (_, members) in &mut tenant.groups {
        members.retain(|m| m != "a2");
    }
    tenant.mount(&server).await;
    mount_delta(
        &server,
        "users",
        "U1",
        vec![
            vec![
                json!({"@odata.type": "#microsoft.graph.user", "id": "a2", "accountEnabled": true}),
            ],
            vec![json!({
                "@odata.type": "#microsoft.graph.user",
                "id": "a2",
                "@removed": {"reason": "deleted"}
            })],
        ],
    )
    .await;
    mount_delta(&server, "groups", "G1", vec![vec![]]).await;
    let source = EntraSource::new(settings(&server, secret()));
    let changes = source
        .changes_since(Some(&cursor(&server, "U1", "G1")))
        .await
        .unwrap();
    let DirectoryChanges::Delta {
        changed, removed, ..
    } = changes
    else {
        panic!("expected a delta, got {changes:?}");
    };
    assert_eq!(removed, vec!["a2".to_owned()]);
    assert!(changed.is_empty(), "{changed:?}");
}

/// RFC 2696 paging: each page ends with its own SearchResultDone. A page that a
/// server cut short (timeLimitExceeded, adminLimitExceeded, sizeLimitExceeded)
/// while still handing out a cookie must fail the search: ldap3's paged adapter
/// follows the cookie without looking at the page's result code, and the last
/// page's success made a listing that missed Ben look whole.
#[tokio::test]
async fn an_ldap_page_cut_short_with_an_error_code_fails_the_snapshot() {
    for code in [3, 4, 11] {
        let (port, _) = crate::ldap_ad::start_fake(crate::ldap_ad::cutting_first_page(code)).await;
        let result = crate::ldap_ad::source(port).snapshot().await;
        match result {
            Err(seatwarden::directory::DirectoryError::Ldap {
                code: got,
                endpoint,
                ..
            }) => {
                assert_eq!(got, code as u32);
                assert!(endpoint.contains("search users"), "{endpoint}");
            }
            other => panic!("result code {code}: expected an LDAP error, got {other:?}"),
        }
    }
}

/// A Graph page that answers 200 with an error object instead of a collection
/// (a gateway's or a throttled shard's): it has no `value` and no
/// `@odata.nextLink`, and taken as the last page it would end the user listing
/// there, everyone after it looking deleted.
#[tokio::test]
async fn an_entra_page_answering_200_with_an_error_object_fails_the_snapshot() {
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, ResponseTemplate};
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param("$skiptoken", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "error": {"code": "UnknownError", "message": "", "innerError": {}}
        })))
        .with_priority(1)
        .mount(&server)
        .await;
    let source = EntraSource::new(settings(&server, secret()));
    let error = source.snapshot().await.unwrap_err().to_string();
    assert!(
        error.contains("/v1.0/users") && error.contains("no \"value\" array"),
        "{error}"
    );
}

/// A delta page that is neither followed by another (`@odata.nextLink`) nor the
/// last (`@odata.deltaLink`): taken as the end, the round's later pages, and the
/// removals on them, would be lost, and the next cursor could not be stored.
#[tokio::test]
async fn an_entra_delta_page_without_either_link_fails_the_sweep_read() {
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, ResponseTemplate};
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users/delta"))
        .and(query_param("$deltatoken", "U1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [{"@odata.type": "#microsoft.graph.user", "id": "a2", "accountEnabled": true}]
        })))
        .mount(&server)
        .await;
    mount_delta(&server, "groups", "G1", vec![vec![]]).await;
    let source = EntraSource::new(settings(&server, secret()));
    let error = source
        .changes_since(Some(&cursor(&server, "U1", "G1")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("/v1.0/users/delta") && error.contains("neither @odata.nextLink"),
        "{error}"
    );
}

/// An Okta page may come back empty with a `Link: rel="next"` (a search or a
/// filtered listing whose page held only what the caller may not see): only
/// the absence of a next link ends a listing. Taken as the end, every user
/// after it would look deleted.
#[tokio::test]
async fn an_empty_okta_page_with_a_next_link_does_not_end_the_listing() {
    use crate::okta::{LinkStyle, expected_small_org, small_org, ssws, statuses};
    use wiremock::matchers::{method, path, query_param_is_missing};
    use wiremock::{Mock, ResponseTemplate};
    let server = MockServer::start().await;
    small_org(LinkStyle::SeparateLines).mount(&server).await;
    let next = format!("{}/api/v1/users?limit=200&after=0", server.uri());
    Mock::given(method("GET"))
        .and(path("/api/v1/users"))
        .and(query_param_is_missing("after"))
        .and(query_param_is_missing("search"))
        .and(query_param_is_missing("filter"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([]))
                .append_header("link", format!("<{next}>; rel=\"next\"").as_str()),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    let source = seatwarden::directory::OktaSource::new(crate::okta::settings(&server, ssws()));
    let snapshot = source.snapshot().await.unwrap();
    assert!(snapshot.complete);
    assert_eq!(statuses(&snapshot), expected_small_org());
}
