//! Review of session 53: the alert and gauge on exceptions naming nobody must
//! say nothing about a run whose reads were not whole.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{Duration, Utc};
use seatwarden::config::ExceptionConfig;

use crate::daemon::reconciled_demo;

/// An exception for 30 days from `now` whose name is a typo nobody has.
pub(crate) fn typo_exception(now: chrono::DateTime<Utc>) -> ExceptionConfig {
    ExceptionConfig {
        user_name: "dana.lee@exmaple.com".to_owned(),
        until: (now + Duration::days(30)).to_rfc3339(),
        reason: "handover, HR-4711".to_owned(),
    }
}

/// An exception names nobody (a typo), alerted. Then the directory read is
/// rejected (it shrank past the limit) run after run, for days: that read
/// tells nothing about who the exception names. The alert was resolved all the
/// same (its resolution held, then sent once `resolve_after` passed): "the
/// exception for … names nobody" resolved with the typo still in the file, and
/// raised again at the next whole read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_directory_read_neither_resolves_nor_raises_exceptions_naming_nobody() {
    let (sandbox, dir, mut config) = reconciled_demo().await;
    let now = Utc::now();
    config.safety.exceptions = vec![typo_exception(now)];
    let (_config_dir, notifier) = crate::review_s39_holds::alerting_notifier();
    let mut store = seatwarden::store::Store::open(&dir.path().join("alerts.db")).unwrap();

    let whole = crate::fixtures::reconcile_at(&config, now).await;
    assert_eq!(whole.report.safety.exceptions_naming_nobody.len(), 1);
    notifier.after_reconcile(&mut store, &whole.report, now);
    assert!(store.alert("exceptions_naming_nobody").unwrap().is_some());

    // The directory export cut to its first person: rejected as a source fault.
    let path = dir.path().join("directory.json");
    let mut directory: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    directory["users"].as_array_mut().unwrap().truncate(1);
    std::fs::write(&path, directory.to_string()).unwrap();
    for day in 1..=3 {
        let at = now + Duration::days(day);
        let rejected = crate::fixtures::reconcile_at(&config, at).await;
        assert!(
            rejected.report.safety.source_fault.is_some(),
            "{:?}",
            rejected.report.safety
        );
        notifier.after_reconcile(&mut store, &rejected.report, at);
        notifier.resolve_due(&mut store, at);
        let record = store.alert("exceptions_naming_nobody").unwrap().unwrap();
        assert_eq!(
            (record.state, record.cleared_at),
            (seatwarden::store::AlertRecordState::Active, None),
            "day {day}: {record:?}"
        );
    }
    sandbox.shutdown().await;
}

/// A contractor's account no directory person matches, kept by an exception
/// while the project ends. A workspace listing that ends short of its
/// `totalResults` leaves the account out: `plan` (and the reconcile) said the
/// exception names nobody, and the daemon mailed it, about an account that is
/// there. Such a read cannot tell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_workspace_listing_does_not_tell_an_exception_naming_nobody() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};
    let server = MockServer::start().await;
    let page = |start: usize, resources: serde_json::Value| {
        ResponseTemplate::new(200)
            .insert_header("content-type", "application/scim+json")
            .set_body_json(serde_json::json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                // The contractor's account is the second: never served.
                "totalResults": 2,
                "startIndex": start,
                "itemsPerPage": resources.as_array().map_or(0, Vec::len),
                "Resources": resources,
            }))
    };
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(move |req: &Request| {
            let start = req
                .url
                .query_pairs()
                .find(|(k, _)| k == "startIndex")
                .map_or(1, |(_, v)| v.parse().unwrap());
            let ada = serde_json::json!([{
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "id": "a1", "userName": "ada@example.com", "externalId": "00u1",
                "active": true, "meta": {"resourceType": "User"},
            }]);
            if start == 1 {
                page(1, ada)
            } else {
                page(start, serde_json::json!([]))
            }
        })
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/scim+json")
                .set_body_json(serde_json::json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                    "totalResults": 0, "startIndex": 1, "itemsPerPage": 0, "Resources": [],
                })),
        )
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        crate::fixtures::ada_config(&format!("{}/scim/v2", server.uri()), dir.path(), "active");
    let now = Utc::now();
    config.safety.exceptions = vec![ExceptionConfig {
        user_name: "freelancer.max@gmail.com".to_owned(),
        until: (now + Duration::days(30)).to_rfc3339(),
        reason: "project handover".to_owned(),
    }];
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let plan = seatwarden::run::execute_with_options(
        &config,
        &seatwarden::run::directory_from_config(&config),
        &client,
        seatwarden::store::Store::open(&config.state.path).unwrap(),
        seatwarden::run::Mode::Plan,
        seatwarden::run::RunOptions {
            now: Some(now),
            ..seatwarden::run::RunOptions::default()
        },
    )
    .await
    .unwrap();
    let safety = &plan.report.safety;
    assert!(safety.workspace_listing_short, "{safety:?}");
    assert!(safety.exceptions_naming_nobody.is_empty(), "{safety:?}");
    assert!(safety.exceptions_naming_nobody_unknown, "{safety:?}");
}
