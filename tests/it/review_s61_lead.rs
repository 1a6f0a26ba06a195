//! Session 61 (lead): `directory.missing_active` for a SCIM directory whose
//! Users carry `active` for some people only. Refusing such a snapshot is the
//! safe default, but a provider that leaves the attribute out on purpose would
//! then stop every leaver from being seen; the setting says what its absence
//! means.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use seatwarden::config::Config;

use crate::review_s61_conn::{all_active, answer_with_active};
use crate::scim_directory::{directory_failure, reconcile, three_provisioned};

/// `config` loaded again with `missing_active = value` in its `[directory]`.
fn with_missing_active(config: &Config, value: &str) -> Result<Config, String> {
    let file = config.state.path.parent().unwrap().join("seatwarden.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let text = text.replacen(
        "kind = \"scim\"\n",
        &format!("kind = \"scim\"\nmissing_active = \"{value}\"\n"),
        1,
    );
    std::fs::write(&file, text).unwrap();
    Config::load_with_env(&file, Some(HashMap::new())).map_err(|e| e.to_string())
}

fn active_of(workspace: &seatwarden::sandbox::Sandbox, user_name: &str) -> bool {
    workspace
        .snapshot()
        .accounts
        .into_iter()
        .find(|a| a.user_name == user_name)
        .unwrap()
        .active
}

/// ben (p2) comes without `active`, ada with `true`, cy with `false`. By
/// default the run fails and names the setting; `active` keeps ben, and
/// `inactive` deactivates him as a leaver, with cy.
#[tokio::test]
async fn missing_active_says_what_an_absent_active_means() {
    for (value, ben_active) in [("active", true), ("inactive", false)] {
        let idp = wiremock::MockServer::start().await;
        let (workspace, _dir, config) = three_provisioned(&idp).await;
        answer_with_active(&idp, [Some(true), None, Some(false)]).await;
        let error = directory_failure(&config).await.to_string();
        assert!(
            error.contains("set directory.missing_active to \"active\" or \"inactive\""),
            "{error}"
        );
        all_active(&workspace);

        let config = with_missing_active(&config, value).unwrap();
        reconcile(&config).await;
        assert!(active_of(&workspace, "ada@example.com"), "{value}");
        assert_eq!(
            active_of(&workspace, "ben@example.com"),
            ben_active,
            "{value}"
        );
        assert!(!active_of(&workspace, "cy@example.com"), "{value}");
        workspace.shutdown().await;
    }
}

/// `inactive` where no User carries `active` would make everyone a leaver:
/// the snapshot fails instead, naming the setting, and nobody is deactivated.
#[tokio::test]
async fn missing_active_inactive_with_no_active_anywhere_fails_the_run() {
    let idp = wiremock::MockServer::start().await;
    let (workspace, _dir, config) = three_provisioned(&idp).await;
    answer_with_active(&idp, [None; 3]).await;
    let config = with_missing_active(&config, "inactive").unwrap();
    let error = directory_failure(&config).await.to_string();
    assert!(
        error.ends_with(
            "/scim/v2/Users: malformed response: none of the 3 Users came with an active \
             attribute, and directory.missing_active = \"inactive\" would read every one as \
             disabled: a provider that sends active only when true sends it for its enabled \
             people; check the setting"
        ),
        "{error}"
    );
    all_active(&workspace);
    workspace.shutdown().await;
}

/// A value it does not know, in the file or from the environment, names the
/// key, the file and the choices.
#[tokio::test]
async fn missing_active_of_an_unknown_value_names_the_key_and_the_choices() {
    let idp = wiremock::MockServer::start().await;
    let (workspace, _dir, config) = three_provisioned(&idp).await;
    let file = config.state.path.parent().unwrap().join("seatwarden.toml");
    let from_env = Config::load_with_env(
        &file,
        Some(HashMap::from([(
            "SEATWARDEN__DIRECTORY__MISSING_ACTIVE".to_owned(),
            "maybe".to_owned(),
        )])),
    )
    .unwrap_err()
    .to_string();
    let in_file = with_missing_active(&config, "maybe").unwrap_err();
    for (error, source) in [
        (
            from_env,
            "environment variable SEATWARDEN__DIRECTORY__MISSING_ACTIVE",
        ),
        (in_file, "seatwarden.toml"),
    ] {
        assert!(
            error.contains(source)
                && error.contains(
                    "key `directory.missing_active`: unknown variant `maybe`, expected one of \
                     `refuse`, `active`, `inactive`"
                ),
            "{error}"
        );
    }
    workspace.shutdown().await;
}
