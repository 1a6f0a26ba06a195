//! A state database belongs to one workspace: a configuration copied for a
//! rehearsal against a sandbox that keeps production's `state.path` must not
//! record the sandbox's runs (leavers verified there, thresholds and breaker
//! spent) as production's, nor send approved production holds to the sandbox.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::sandbox::Faults;

use crate::fixtures::seatwarden_in as seatwarden;

const TOKEN: &str = "review-s39-workspace";

/// Production's reconcile holds its deprovisions (threshold 0). The same
/// configuration pointed at a rehearsal sandbox is refused by `reconcile`,
/// `plan` and `approve` (exit 1, naming both URLs and the way out) before any
/// request reaches the sandbox; `--workspace-moved` records the new URL (a
/// preview of it records nothing: `review_s43_audit`), after which the old one is
/// the stranger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_database_is_refused_with_another_workspace_until_told_it_moved() {
    let production = crate::fixtures::demo_sandbox(TOKEN, Faults::default()).await;
    let rehearsal = crate::fixtures::demo_sandbox(TOKEN, Faults::default()).await;
    production.record_requests();
    rehearsal.record_requests();
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = crate::fixtures::demo_env(
        dir.path(),
        &production,
        TOKEN,
        &[("SEATWARDEN__SAFETY__MAX_DEPROVISIONS", "0")],
    );
    let pointed_at = |url: &str| -> Vec<(String, String)> {
        env.iter()
            .map(|(k, v)| {
                let v = if k == "SEATWARDEN__WORKSPACE__URL" {
                    url.to_owned()
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    };
    let run = |env: Vec<(String, String)>, args: &'static [&'static str]| {
        let dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || seatwarden(&dir, &env, args))
    };
    let (code, stderr) = run(env.clone(), &["reconcile"]).await.unwrap();
    assert_eq!(code, Some(3), "{stderr}");
    let production_seen = production.requests_seen().len();
    assert!(production_seen > 0);

    let production_url = production
        .base_url()
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    let rehearsal_url = rehearsal
        .base_url()
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    let elsewhere = pointed_at(&rehearsal_url);
    for args in [&["reconcile"][..], &["plan"], &["approve", "1"]] {
        let (code, stderr) = run(elsewhere.clone(), args).await.unwrap();
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "the workspace at {production_url}, but workspace.url is now {rehearsal_url}"
            )) && stderr.contains("its own state.path")
                && stderr.contains("reconcile --workspace-moved"),
            "{args:?}: {stderr}"
        );
    }
    assert!(
        rehearsal.requests_seen().is_empty(),
        "{:?}",
        rehearsal.requests_seen()
    );
    assert_eq!(production.requests_seen().len(), production_seen);

    let (code, stderr) = run(elsewhere.clone(), &["reconcile", "--workspace-moved"])
        .await
        .unwrap();
    assert_eq!(code, Some(3), "{stderr}");
    assert!(!rehearsal.requests_seen().is_empty());
    let audit = seatwarden::store::Store::open(&dir.path().join("state.db"))
        .unwrap()
        .audit()
        .unwrap();
    let moved: Vec<_> = audit
        .iter()
        .filter(|e| e.command == "workspace_moved")
        .collect();
    assert_eq!(moved.len(), 1, "{audit:?}");
    assert_eq!(
        moved[0].detail,
        format!("workspace moved from {production_url} to {rehearsal_url}")
    );
    let (code, stderr) = run(elsewhere, &["plan"]).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = run(env, &["plan"]).await.unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the workspace at {rehearsal_url}, but workspace.url is now {production_url}"
        )),
        "{stderr}"
    );
    assert_eq!(production.requests_seen().len(), production_seen);
}
