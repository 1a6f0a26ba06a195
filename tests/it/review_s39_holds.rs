//! Session 39's review of holds, killed runs and alerts: what an incomplete
//! directory read held is no approval's and is never counted as one; a killed
//! reconcile's leavers keep its start as their deadline's origin after
//! `approve` recovered it; a sweep closes the dead runs it recovered; a breaker a
//! sweep trips alerts at once; `report --email` is capped as the digest is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};
use std::path::PathBuf;

/// The binary with `args` against the configuration `config`, to its end.
async fn binary(config: PathBuf, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("SEATWARDEN_CONFIG")
            .env("SEATWARDEN_OPERATOR", "review")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// A SCIM directory whose listing ends short of its `totalResults` holds the
/// deactivation of the person it left out; `approve` refuses it. `status` (text
/// and JSON) and the report counted it as "awaiting approval" all the same, and
/// the report's headline said "needs a human": an operator told to approve was
/// then refused. They now count it apart and say what releases it: a reconcile
/// from a whole read. The exit code stays 3, as README says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_incomplete_directory_read_held_is_not_told_as_awaiting_approval() {
    use crate::scim_directory::{THREE, mount_people, three_provisioned};
    let idp = wiremock::MockServer::start().await;
    let (workspace, dir, _config) = three_provisioned(&idp).await;
    mount_people(&idp, &THREE[..2], 3).await;
    let config = dir.path().join("seatwarden.toml");

    let out = binary(config.clone(), &["reconcile"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(
            "1 action held because the directory read was incomplete — nothing to approve; \
             `seatwarden reconcile` again once the directory reads whole"
        ) && !text.contains("needs a human"),
        "{text}"
    );

    let out = binary(config.clone(), &["status", "--format", "json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["last_reconcile_awaiting_approval"], 0, "{json}");
    assert_eq!(json["last_reconcile_held_incomplete_directory"], 1, "{json}");
    let out = binary(config.clone(), &["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("Last reconcile:"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        !line.contains("held for approval")
            && line.contains(
                "1 action held because its directory read was incomplete (nothing to approve: \
                 `seatwarden reconcile` again once the directory reads whole)"
            ),
        "{line}"
    );

    // Refused by `approve`, it is still no approval's.
    let run = json["last_reconcile"]["id"].as_i64().unwrap().to_string();
    let out = binary(config.clone(), &["approve", &run]).await;
    assert_eq!(out.status.code(), Some(3));
    let out = binary(config.clone(), &["status", "--format", "json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["last_reconcile_awaiting_approval"], 0, "{json}");
    assert_eq!(json["last_reconcile_held_incomplete_directory"], 1, "{json}");
    workspace.shutdown().await;
}
