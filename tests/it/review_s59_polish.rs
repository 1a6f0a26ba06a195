//! Session 59, small leftovers of the walkthrough and the reviews.
//!
//! - `report.email.smtp_url = "smtp.example.com:587"` (a host and port, as mail
//!   clients take them) was answered "the URL has no host": it has no scheme.
//!   The forms suggested for a `smtp_url` without a scheme showed
//!   `?[redacted]` for `?tls=starttls`, which holds no secret.
//! - A cron step of zero (`*/0 * * * *`) was croner's "Step cannot be zero",
//!   with no field and nothing to write.
//! - The example configurations said every key can be overridden from the
//!   environment; the mapping and exception tables and `safety.distinct_groups`
//!   cannot.
//! - A sweep counted the episodes it ended for a look-alike group as
//!   `cancelled`, the count of people back: those people have no access back,
//!   their deprovision waits for a decision (`ended_look_alike`).
//! - A SCIM directory that refuses `attributes=displayName` on `/Groups` (a 400
//!   `invalidValue` for a parameter it does not take) had its groups "not
//!   listed" by `check-config --connect`: they are listed again without it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use crate::review_s59_walk::{check_config, configured};

#[test]
fn an_smtp_url_written_as_host_and_port_is_said_to_lack_a_scheme() {
    let dir = tempfile::tempdir().unwrap();
    configured(
        dir.path(),
        b"[report.email]\nsmtp_url = \"smtp.example.com:587\"\n\
          from = \"seatwarden@example.com\"\nto = [\"it@example.com\"]\n",
    );
    let (code, output) = check_config(dir.path(), &[]);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("seatwarden.toml")
            && output.contains("report.email.smtp_url")
            && output.contains("has no scheme")
            && output.contains("smtp://smtp.example.com:587?tls=starttls")
            && output.contains("smtps://smtp.example.com:465"),
        "{output}"
    );
    assert!(!output.contains("no host"), "{output}");
}

/// The README says a variable's boolean is `true` or `false` in any case: every
/// boolean key reads its variable so, and nothing else passes for one.
#[test]
fn a_variables_boolean_is_true_or_false_in_any_case() {
    let dir = tempfile::tempdir().unwrap();
    configured(dir.path(), b"");
    for value in ["True", "FALSE"] {
        let (code, output) = check_config(dir.path(), &[("SEATWARDEN__SCHEDULE__DRY_RUN", value)]);
        assert_eq!(code, Some(0), "{value:?}: {output}");
    }
    let (code, output) = check_config(dir.path(), &[("SEATWARDEN__SCHEDULE__DRY_RUN", "yes")]);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("expected true or false"), "{output}");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let readme = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        readme.contains("a variable's boolean is `true` or `false` in any case"),
        "the README says what a variable's boolean may be"
    );
}

#[test]
fn a_cron_step_of_zero_names_the_key_the_file_and_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    configured(dir.path(), b"[schedule]\nsweep = \"*/0 * * * *\"\n");
    let (code, output) = check_config(dir.path(), &[]);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("seatwarden.toml")
            && output.contains("schedule.sweep")
            && output.contains("/0 in the minute field")
            && output.contains("write * for every minute"),
        "{output}"
    );
    assert!(!output.contains("Step cannot be zero"), "{output}");
}

/// Both example configurations that speak of environment overrides name the keys
/// only the file can hold, as `seatwarden --help` does.
#[test]
fn the_example_configurations_name_the_keys_no_variable_sets() {
    for example in [
        "config/example/seatwarden.toml",
        "config/seatwarden.example.toml",
    ] {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(example)).unwrap();
        let header: String = text
            .lines()
            .take_while(|line| line.starts_with('#'))
            .map(|line| line.trim_start_matches('#').trim())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            header.contains("SEATWARDEN__SECTION__KEY"),
            "{example}: {header}"
        );
        assert!(
            header.contains("[[policy.mapping]]")
                && header.contains("[[safety.exceptions]]")
                && header.contains("safety.distinct_groups"),
            "{example} does not name the keys read from the file only: {header}"
        );
    }
}

/// Bob's episode, ended because he is only in a look-alike of the scope group,
/// is not counted as cancelled (a person back) but apart.
#[tokio::test]
async fn a_sweep_counts_look_alike_ended_episodes_apart_from_cancelled_ones() {
    let (config, sandbox, _okta, _dir) =
        crate::review_s58_lookalike::bob_with_an_episode_due().await;
    let (outcome, _, _) = crate::review_s58_lookalike::sweep_now(&config).await;
    assert_eq!(
        (
            outcome.cancelled,
            outcome.ended_look_alike,
            outcome.enforced
        ),
        (0, 1, 0),
        "{outcome:?}"
    );
    sandbox.shutdown().await;
}

/// The provider refuses `GET /Groups?attributes=displayName` with a 400
/// `invalidValue`; asked once more without `attributes`, it lists its groups,
/// and the look-alike among them is warned of.
#[tokio::test]
async fn a_scim_directory_refusing_attributes_has_its_groups_listed_without_them() {
    use crate::review_s58_lookalike::{checked_scim_directory, scim_directory, scim_list};
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, ResponseTemplate};
    let idp = scim_directory().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .and(query_param("attributes", "displayName"))
        .respond_with(
            ResponseTemplate::new(400)
                .insert_header("content-type", "application/scim+json")
                .set_body_json(serde_json::json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                    "status": "400",
                    "scimType": "invalidValue",
                    "detail": "unsupported query parameter: attributes",
                })),
        )
        .with_priority(1)
        .mount(&idp)
        .await;
    let groups = serde_json::json!([
        {"id": "g1", "displayName": "Taskade Users", "members": []},
        {"id": "g2", "displayName": "Taskade\u{200b} Users", "members": []},
    ]);
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(scim_list(groups, 2))
        .mount(&idp)
        .await;
    let checked = checked_scim_directory(&idp).await;
    assert!(checked.passed(), "{}", checked.line());
    assert!(
        checked
            .warnings
            .iter()
            .all(|w| !w.contains("could not be listed")),
        "{:#?}",
        checked.warnings
    );
    assert!(
        checked
            .warnings
            .iter()
            .any(|w| w.contains("\"Taskade\\u{200b} Users\" is not \"Taskade Users\"")),
        "{:#?}",
        checked.warnings
    );
}
