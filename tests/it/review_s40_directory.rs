//! Review of the directory connectors as an IT engineer runs them against a real
//! Okta org, Entra tenant or Active Directory (session 40): statuses a security
//! team reads as "left", and reads that must not lose anyone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::directory::{DirectoryChanges, OktaSource};
use seatwarden::model::IdentityStatus;
use wiremock::MockServer;

use crate::okta::{LinkStyle, settings, small_org, ssws};

/// Okta deactivates asynchronously: until every app is deprovisioned the user
/// keeps their status (ACTIVE here, so the plain list shows them and the
/// DEPROVISIONED search does not) with `transitioningToStatus: DEPROVISIONED`.
/// A deactivation cannot be undone: the leaver is deprovisioned now, in a full
/// read and in the sweep's delta, not once Okta has finished with every app.
#[tokio::test]
async fn an_okta_user_whose_deactivation_is_under_way_is_deprovisioned() {
    let server = MockServer::start().await;
    let mut org = small_org(LinkStyle::SeparateLines);
    let bob = org.users.iter_mut().find(|u| u["id"] == "00u2").unwrap();
    bob["transitioningToStatus"] = "DEPROVISIONED".into();
    bob["lastUpdated"] = "2026-11-30T02:00:00.000Z".into();
    org.mount(&server).await;
    let source = OktaSource::new(settings(&server, ssws()));
    let status_of = |identities: &[seatwarden::model::Identity], id: &str| {
        identities
            .iter()
            .find(|i| i.id == id)
            .map(|i| i.status)
            .unwrap_or_else(|| panic!("{id} missing"))
    };

    let snapshot = source.snapshot().await.unwrap();
    assert_eq!(
        status_of(&snapshot.identities, "00u2"),
        IdentityStatus::Deprovisioned
    );
    assert_eq!(
        status_of(&snapshot.identities, "00u1"),
        IdentityStatus::Active
    );

    let DirectoryChanges::Full {
        cursor: Some(cursor),
        ..
    } = source.changes_since(None).await.unwrap()
    else {
        panic!("expected a full read with a cursor");
    };
    let mut json: serde_json::Value =
        serde_json::from_str(cursor.strip_prefix("okta-v2:").unwrap()).unwrap();
    json["at"] = "2026-11-30T01:00:00.000Z".into();
    let changes = source
        .changes_since(Some(&format!("okta-v2:{json}")))
        .await
        .unwrap();
    let DirectoryChanges::Delta { changed, .. } = changes else {
        panic!("expected a delta, got {changes:?}");
    };
    assert_eq!(status_of(&changed, "00u2"), IdentityStatus::Deprovisioned);
}
