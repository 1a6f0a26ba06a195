//! Configuration: the documented shape loads, the environment overlays it, and bad
//! input names the key and the file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use seatwarden::config::{Config, DirectoryConfig};
use seatwarden::directory::{Directory, LdapFlavor};
use seatwarden::model::Role;

pub(crate) const MINIMAL: &str = r#"
[directory]
kind = "file"
path = "directory.json"

[workspace]
url = "https://scim.example.com/scim/v2"
token = "s3cr3t-token-value"
"#;

/// Written 0600, as a configuration holding an inline secret should be (one that
/// every user can read is warned about; see
/// `a_config_file_holding_secrets_others_can_read_is_warned_about`).
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

pub(crate) fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "seatwarden.toml", text);
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::load_with_env(&path, Some(env)).map_err(|e| e.to_string())
}

#[test]
fn the_documented_example_loads_with_its_values() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example/seatwarden.toml");
    let config = Config::load_with_env(&path, Some(HashMap::new())).unwrap();
    assert_eq!(config.workspace.page_size, 100);
    assert_eq!(config.workspace.max_concurrency, 4);
    assert_eq!(config.policy.scope_groups, vec!["Taskade Users"]);
    assert_eq!(config.policy.default_role, Role::Viewer);
    assert_eq!(config.policy.mapping.len(), 2);
    assert_eq!(config.policy.mapping[0].role, Role::Editor);
    assert_eq!(config.safety.max_deprovisions, 25);
    assert_eq!(config.safety.protected, vec!["breakglass@example.com"]);
    assert_eq!(config.report_name(), "acme");
    assert_eq!(config.report_timezone().unwrap(), chrono_tz::Europe::Berlin);
    // Relative paths are resolved against the configuration file's directory.
    let DirectoryConfig::File { path: directory } = &config.directory else {
        panic!("expected a file directory");
    };
    assert_eq!(directory, &path.parent().unwrap().join("directory.json"));
    // An absolute state path stays as written: the service's, not next to the file.
    assert_eq!(config.state.path, Path::new("/var/lib/seatwarden/state.db"));
}

#[test]
fn defaults_fill_everything_but_directory_and_workspace() {
    let config = load(MINIMAL, &[]).unwrap();
    assert_eq!(config.workspace.role_attribute, "roles");
    assert_eq!(config.workspace.timeout, "30s");
    assert!(config.policy.scope_groups.is_empty());
    assert_eq!(config.safety.min_population_for_percent, 100);
}

#[test]
fn environment_variables_override_keys_and_lists() {
    let config = load(
        MINIMAL,
        &[
            ("SEATWARDEN__WORKSPACE__PAGE_SIZE", "50"),
            (
                "SEATWARDEN__POLICY__SCOPE_GROUPS",
                "Taskade Users,Contractors",
            ),
            ("SEATWARDEN__SAFETY__MAX_DEPROVISIONS", "3"),
        ],
    )
    .unwrap();
    assert_eq!(config.workspace.page_size, 50);
    assert_eq!(
        config.policy.scope_groups,
        vec!["Taskade Users", "Contractors"]
    );
    assert_eq!(config.safety.max_deprovisions, 3);
}

/// Environment values are text: a secret that looks like a number or a boolean
/// arrives as typed (parsed, `0123456` came back as `123456`), and so does a list
/// item that looks like one; numbers and booleans are still read where wanted.
#[test]
fn environment_values_that_look_like_numbers_stay_as_typed() {
    use secrecy::ExposeSecret;
    for secret in ["0123456", "true", "12e45", "nan", "1.50"] {
        let config = load(MINIMAL, &[("SEATWARDEN__WORKSPACE__TOKEN", secret)]).unwrap();
        assert_eq!(
            config.workspace.token.as_ref().unwrap().expose_secret(),
            secret
        );
    }
    let config = load(
        MINIMAL,
        &[
            ("SEATWARDEN__POLICY__SCOPE_GROUPS", "2024"),
            ("SEATWARDEN__SAFETY__PROTECTED_GROUPS", "007,true"),
            ("SEATWARDEN__SAFETY__MAX_DEPROVISION_PERCENT", "2.5"),
            ("SEATWARDEN__DEPROVISION__ACTION", "delete"),
            ("SEATWARDEN__DEPROVISION__DELETE_AFTER", "30d"),
        ],
    )
    .unwrap();
    assert_eq!(config.policy.scope_groups, vec!["2024"]);
    assert_eq!(config.safety.protected_groups, vec!["007", "true"]);
    assert_eq!(config.safety.max_deprovision_percent, 2.5);
}

#[test]
fn a_zero_timeout_is_refused_naming_the_key() {
    let err = load(MINIMAL, &[("SEATWARDEN__WORKSPACE__TIMEOUT", "0s")]).unwrap_err();
    assert!(err.contains("workspace.timeout"), "{err}");
    assert!(err.contains("longer than zero"), "{err}");
    let err = load(
        &format!(
            "{MINIMAL}
[report.email]
smtp_url = \"smtp://mail.example.com\"
from = \"sw@example.com\"
to = [\"a@example.com\"]
timeout = \"0m\"
"
        ),
        &[],
    )
    .unwrap_err();
    assert!(err.contains("report.email.timeout"), "{err}");
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let err = load(MINIMAL, &[("SEATWARDEN__WORKSPACE__PAGE_SIZE", "abc")]).unwrap_err();
    assert!(
        err.contains("environment variable SEATWARDEN__WORKSPACE__PAGE_SIZE"),
        "{err}"
    );
}

/// A mistyped variable is an unknown key too, and is blamed on the variable, not
/// on a file that does not contain it; a list item's error names its variable.
#[test]
fn an_unknown_key_from_a_variable_names_the_variable() {
    for name in [
        "SEATWARDEN__WORKSPACE__TOKENFILE",
        "SEATWARDEN__WORKSPACE__PAGESIZE",
        "SEATWARDEN__WORKSPACE_TOKEN_FILE",
    ] {
        let err = load(MINIMAL, &[(name, "/run/token")]).unwrap_err();
        assert!(
            err.contains(&format!("environment variable {name}")),
            "{err}"
        );
        assert!(!err.contains("seatwarden.toml"), "{err}");
    }
    // A key the file has, in another section, set in the wrong one; and a
    // misspelt section. The file's own keys are looked up section by section.
    for (name, file) in [
        (
            "SEATWARDEN__SAFETY__PAGE_SIZE",
            format!("{MINIMAL}page_size = 100\n"),
        ),
        (
            "SEATWARDEN__SAFTY__MAX_DEPROVISIONS",
            format!("{MINIMAL}\n[safety]\nmax_deprovisions = 5\n"),
        ),
    ] {
        let err = load(&file, &[(name, "5")]).unwrap_err();
        assert!(
            err.starts_with(&format!("environment variable {name}")),
            "{err}"
        );
    }
    // Unknown in the file itself: the file is named, whatever the variables say.
    let err = load(
        &format!("{MINIMAL}page_sise = 100\n"),
        &[("SEATWARDEN__WORKSPACE__PAGE_SISE", "5")],
    )
    .unwrap_err();
    assert!(err.contains("seatwarden.toml"), "{err}");
    let err = load(
        &format!(
            "{MINIMAL}\n[report.email]\nsmtp_url = \"smtp://mail.example.com\"\nfrom = \"sw@example.com\"\nto = [\"a@example.com\"]\n"
        ),
        &[("SEATWARDEN__REPORT__EMAIL__TO", "a@example.com,not an address")],
    )
    .unwrap_err();
    assert!(
        err.contains("environment variable SEATWARDEN__REPORT__EMAIL__TO"),
        "{err}"
    );
}

#[test]
fn an_unknown_key_is_named_with_the_file() {
    // The file, the section and the key, not only serde's list of the right ones
    // (which has `max_deprovisions` in it).
    let err = load(&format!("{MINIMAL}\n[safety]\nmax_deprovision = 3\n"), &[]).unwrap_err();
    assert!(
        err.contains(
            "seatwarden.toml: key `safety.max_deprovision`: unknown field `max_deprovision`,"
        ),
        "{err}"
    );
    let err = load(&format!("{MINIMAL}\n[safety.circuit]\nwindows = 3\n"), &[]).unwrap_err();
    assert!(
        err.contains("seatwarden.toml: key `safety.circuit.windows`: unknown field `windows`,"),
        "{err}"
    );
    // A field of a list item is named with its dot.
    let err = load(
        &format!(
            "{MINIMAL}
[[policy.mapping]]
group = \"g\"
workspace_group = \"w\"
role = \"Boss\"
"
        ),
        &[],
    )
    .unwrap_err();
    assert!(
        err.contains("key `policy.mapping[0].role`: `Boss` is not one of `Owner`"),
        "{err}"
    );
}

#[test]
fn a_wrong_type_is_named_with_key_and_file() {
    let text = MINIMAL.replace(
        "token = \"s3cr3t-token-value\"",
        "token = \"s3cr3t-token-value\"\npage_size = \"lots\"",
    );
    let err = load(&text, &[]).unwrap_err();
    assert!(err.contains("page_size"), "{err}");
    assert!(err.contains("seatwarden.toml"), "{err}");
}

#[test]
fn pagination_is_auto_unless_set_and_a_bad_method_names_the_key() {
    use seatwarden::workspace::Pagination;
    assert_eq!(
        load(MINIMAL, &[]).unwrap().workspace.pagination,
        Pagination::Auto
    );
    let with = |value: &str| {
        load(
            &MINIMAL.replace(
                "[workspace]\n",
                &format!("[workspace]\npagination = \"{value}\"\n"),
            ),
            &[],
        )
    };
    assert_eq!(
        with("cursor").unwrap().workspace.pagination,
        Pagination::Cursor
    );
    assert_eq!(
        with("index").unwrap().workspace.pagination,
        Pagination::Index
    );
    let config = load(MINIMAL, &[("SEATWARDEN__WORKSPACE__PAGINATION", "cursor")]).unwrap();
    assert_eq!(config.workspace.pagination, Pagination::Cursor);
    let err = with("offset").unwrap_err();
    assert!(
        err.contains("workspace.pagination")
            && err.contains("seatwarden.toml")
            && err.contains("`offset` is not one of `auto`, `index`, `cursor`"),
        "{err}"
    );
}

#[test]
fn group_members_are_listed_unless_set_and_a_bad_value_names_the_key() {
    use seatwarden::workspace::GroupMembers;
    let config = load(MINIMAL, &[]).unwrap();
    assert_eq!(config.workspace.group_members, GroupMembers::Listed);
    assert_eq!(
        config.scim_settings().unwrap().group_members,
        GroupMembers::Listed
    );
    let with = |value: &str| {
        load(
            &MINIMAL.replace(
                "[workspace]\n",
                &format!("[workspace]\ngroup_members = \"{value}\"\n"),
            ),
            &[],
        )
    };
    let config = with("by_member_filter").unwrap();
    assert_eq!(
        config.scim_settings().unwrap().group_members,
        GroupMembers::ByMemberFilter
    );
    assert_eq!(
        with("listed").unwrap().workspace.group_members,
        GroupMembers::Listed
    );
    let config = load(
        MINIMAL,
        &[("SEATWARDEN__WORKSPACE__GROUP_MEMBERS", "by_member_filter")],
    )
    .unwrap();
    assert_eq!(config.workspace.group_members, GroupMembers::ByMemberFilter);
    let err = with("by_filter").unwrap_err();
    assert!(
        err.contains("workspace.group_members")
            && err.contains("seatwarden.toml")
            && err.contains("`by_filter` is not one of `listed`, `by_member_filter`"),
        "{err}"
    );
}

#[test]
fn a_bad_role_names_the_key() {
    let err = load(
        &format!("{MINIMAL}\n[policy]\ndefault_role = \"Admin\"\n"),
        &[],
    )
    .unwrap_err();
    assert!(
        err.ends_with(
            "key `policy.default_role`: `Admin` is not one of `Owner`, `Maintainer`, `Editor`, \
             `Commenter`, `Collaborator`, `Participant`, `Viewer`"
        ),
        "{err}"
    );
    let err = load(
        &format!("{MINIMAL}\n[policy]\nunmatched_accounts = \"zap\"\n"),
        &[],
    )
    .unwrap_err();
    assert!(
        err.ends_with(
            "key `policy.unmatched_accounts`: `zap` is not one of `report`, `adopt`, `deactivate`"
        ),
        "{err}"
    );
}

#[test]
fn semantic_errors_name_the_key() {
    let err = load(
        &MINIMAL.replace("https://scim.example.com/scim/v2", "not a url"),
        &[],
    )
    .unwrap_err();
    assert!(err.contains("workspace.url"), "{err}");
    let err = load(
        &format!("{MINIMAL}\n[safety]\nmax_deprovision_percent = 150\n"),
        &[],
    )
    .unwrap_err();
    assert!(err.contains("safety.max_deprovision_percent"), "{err}");
    let err = load(
        &MINIMAL.replace(
            "token = \"s3cr3t-token-value\"",
            "role_attribute = \"roles\"",
        ),
        &[],
    )
    .unwrap_err();
    assert!(err.contains("workspace.token"), "{err}");
}

#[test]
fn token_file_is_read_trimmed_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "token", "file-token-123\n");
    let text = MINIMAL.replace("token = \"s3cr3t-token-value\"", "token_file = \"token\"");
    let path = write(dir.path(), "seatwarden.toml", &text);
    let config = Config::load_with_env(&path, Some(HashMap::new())).unwrap();
    use secrecy::ExposeSecret;
    assert_eq!(
        config.workspace_token().unwrap().expose_secret(),
        "file-token-123"
    );
    let printed = config.to_redacted_toml();
    assert!(!printed.contains("file-token-123"));
    assert!(printed.contains("token_file"));
}

#[test]
fn the_effective_config_shows_what_unset_report_keys_come_to() {
    let printed = load(MINIMAL, &[]).unwrap().to_redacted_toml();
    let table: toml::Table = printed.parse().unwrap();
    let report = table["report"].as_table().unwrap();
    assert_eq!(
        report["name"].as_str(),
        Some("scim.example.com"),
        "{printed}"
    );
    assert_eq!(report["timezone"].as_str(), Some("UTC"), "{printed}");
    assert_eq!(
        report["admin_command"].as_str(),
        Some("seatwarden"),
        "{printed}"
    );

    // What is set stays as it is; an unset report zone follows the schedule's.
    let text = format!(
        "{MINIMAL}\n[report]\nname = \"Acme\"\n\n[schedule]\ntimezone = \"Europe/Berlin\"\n"
    );
    let printed = load(&text, &[]).unwrap().to_redacted_toml();
    let table: toml::Table = printed.parse().unwrap();
    assert_eq!(table["report"]["name"].as_str(), Some("Acme"), "{printed}");
    assert_eq!(
        table["report"]["timezone"].as_str(),
        Some("Europe/Berlin"),
        "{printed}"
    );
}

#[test]
fn inline_token_is_redacted_in_the_effective_config_and_debug_output() {
    let config = load(MINIMAL, &[]).unwrap();
    let printed = config.to_redacted_toml();
    assert!(printed.contains("[redacted]"), "{printed}");
    assert!(!printed.contains("s3cr3t-token-value"));
    assert!(!format!("{config:?}").contains("s3cr3t-token-value"));
}

#[test]
fn a_missing_token_file_names_the_key_and_the_file() {
    let text = MINIMAL.replace(
        "token = \"s3cr3t-token-value\"",
        "token_file = \"/nonexistent/token\"",
    );
    let config = load(&text, &[]).unwrap();
    let err = config.workspace_token().unwrap_err().to_string();
    assert!(err.contains("workspace.token_file"), "{err}");
    assert!(err.contains("/nonexistent/token"), "{err}");
}

#[test]
fn a_missing_config_file_says_how_to_point_at_one() {
    let err = Config::load_with_env(Path::new("/nonexistent/seatwarden.toml"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("SEATWARDEN_CONFIG"), "{err}");
}

#[test]
fn durations_parse_in_the_documented_units() {
    use seatwarden::config::parse_duration;
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
    assert!(parse_duration("30").is_err());
    assert!(parse_duration("fast").is_err());
    // Date arithmetic beyond chrono's range would panic in a daemon job.
    assert_eq!(
        parse_duration("36500d"),
        Ok(Duration::from_secs(36_500 * 86_400))
    );
    let long = parse_duration("100000000d").unwrap_err();
    assert!(long.contains("longer than 100 years"), "{long}");
}

#[test]
fn the_production_example_configuration_loads() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/seatwarden.example.toml");
    let config = Config::load_with_env(&path, Some(HashMap::new())).unwrap();
    let daemon = config.daemon_settings().unwrap();
    assert_eq!(daemon.sla, std::time::Duration::from_secs(3600));
    // Its [report.email] is commented out: nowhere to send a digest, so none is
    // scheduled until it is filled in.
    assert!(config.report.email.is_none());
    assert!(daemon.digest.is_none());
}

#[test]
fn daemon_settings_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seatwarden.toml");
    let base = "[directory]\nkind = \"file\"\npath = \"d.json\"\n[workspace]\nurl = \"https://x.example/scim/v2\"\ntoken = \"t\"\n";
    for (extra, key) in [
        (
            "[schedule]\ntimezone = \"Mars/Olympus\"\n",
            "schedule.timezone",
        ),
        ("[schedule]\nsweep = \"*/5 * * *\"\n", "schedule.sweep"),
        // 31 February: would run once at the first start, then never.
        (
            "[schedule]\nreconcile = \"0 9 31 2 *\"\n",
            "schedule.reconcile",
        ),
        // croner takes a step past the field as its first value: hourly.
        (
            "[schedule]\nreconcile = \"*/61 * * * *\"\n",
            "schedule.reconcile",
        ),
        ("[schedule]\ndigest = \"0 8 30 2 *\"\n", "schedule.digest"),
        ("[deprovision]\nsla = \"soon\"\n", "deprovision.sla"),
        // The 24 h safety limits count the runs still stored.
        ("[schedule]\nretention = \"12h\"\n", "schedule.retention"),
        ("[http]\nlisten = \"localhost\"\n", "http.listen"),
    ] {
        std::fs::write(&path, format!("{base}{extra}")).unwrap();
        let err = Config::load_with_env(&path, Some(HashMap::new()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(key) && err.contains("seatwarden.toml"),
            "{err}"
        );
    }
}

// ---- Directory connectors ----

fn example(name: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name);
    Config::load_with_env(&path, Some(HashMap::new())).unwrap()
}

/// Roles are managed whole: an example that manages roles without a mapping that
/// gives Owner would have the first reconcile demote every workspace Owner in the
/// directory but the last. Each one maps a group to Owner and protects a
/// break-glass account, and says why next to them.
#[test]
fn every_example_keeps_its_owners_and_protects_a_break_glass_account() {
    for name in [
        "okta.example.toml",
        "entra.example.toml",
        "ldap.example.toml",
        "scim.example.toml",
        "seatwarden.example.toml",
        "example/seatwarden.toml",
        "demo/seatwarden.toml",
    ] {
        let config = example(name);
        assert_eq!(config.workspace.role_attribute, "roles", "{name}");
        assert!(
            config.policy.mapping.iter().any(|m| m.role == Role::Owner),
            "{name}: no [[policy.mapping]] gives Owner"
        );
        assert!(
            config
                .safety
                .protected
                .iter()
                .any(|p| p.contains("breakglass")),
            "{name}: no break-glass account in safety.protected"
        );
    }
    for name in [
        "okta.example.toml",
        "entra.example.toml",
        "ldap.example.toml",
        "scim.example.toml",
    ] {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config")
                .join(name),
        )
        .unwrap();
        assert!(
            text.contains("WORKSPACE OWNERS") && text.contains("BREAK-GLASS"),
            "{name}: the Owner mapping and the protected list lost their warnings"
        );
    }
}

#[test]
fn the_okta_example_loads() {
    let config = example("okta.example.toml");
    let DirectoryConfig::Okta {
        url,
        token_file,
        client_id,
        max_concurrency,
        ..
    } = &config.directory
    else {
        panic!("expected okta");
    };
    assert_eq!(url.as_str(), "https://acme.okta.com/");
    assert_eq!(
        token_file.as_deref(),
        Some(Path::new(
            "/run/credentials/seatwarden.service/directory-token"
        ))
    );
    assert!(client_id.is_none());
    assert_eq!(*max_concurrency, 8);
    assert_eq!(config.directory().describe(), "okta https://acme.okta.com");
}

#[test]
fn the_entra_example_loads() {
    let config = example("entra.example.toml");
    let DirectoryConfig::Entra {
        tenant_id,
        client_secret_file,
        requests_per_second,
        ..
    } = &config.directory
    else {
        panic!("expected entra");
    };
    assert_eq!(tenant_id, "00000000-0000-0000-0000-000000000000");
    assert!(client_secret_file.is_some());
    assert_eq!(*requests_per_second, 50);
    assert!(matches!(
        config.directory,
        DirectoryConfig::Entra {
            include_guests: true,
            ..
        }
    ));
    // A boolean from the environment is read from its text.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/entra.example.toml");
    let env = HashMap::from([(
        "SEATWARDEN__DIRECTORY__INCLUDE_GUESTS".to_owned(),
        "false".to_owned(),
    )]);
    let config = Config::load_with_env(&path, Some(env)).unwrap();
    assert!(matches!(
        config.directory,
        DirectoryConfig::Entra {
            include_guests: false,
            ..
        }
    ));
    // Numbers too, in the tagged [directory] table.
    let env = HashMap::from([
        (
            "SEATWARDEN__DIRECTORY__MAX_CONCURRENCY".to_owned(),
            "8".to_owned(),
        ),
        (
            "SEATWARDEN__DIRECTORY__REQUESTS_PER_SECOND".to_owned(),
            "0".to_owned(),
        ),
    ]);
    let config = Config::load_with_env(&path, Some(env)).unwrap();
    assert!(matches!(
        config.directory,
        DirectoryConfig::Entra {
            max_concurrency: 8,
            requests_per_second: 0,
            ..
        }
    ));
    let env = HashMap::from([(
        "SEATWARDEN__DIRECTORY__MAX_CONCURRENCY".to_owned(),
        "eight".to_owned(),
    )]);
    let err = Config::load_with_env(&path, Some(env))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"eight\""), "{err}");
}

#[test]
fn the_ldap_example_loads_with_active_directory_defaults() {
    let config = example("ldap.example.toml");
    let DirectoryConfig::Ldap {
        flavor, page_size, ..
    } = &config.directory
    else {
        panic!("expected ldap");
    };
    assert_eq!(*flavor, LdapFlavor::ActiveDirectory);
    assert_eq!(*page_size, 500);
    let Directory::Ldap(source) = config.directory() else {
        panic!("expected an LDAP source");
    };
    let settings = source.settings();
    assert_eq!(
        settings.user_filter,
        "(&(objectCategory=person)(objectClass=user)(userPrincipalName=*))"
    );
    assert_eq!(settings.id_attribute, "objectGUID");
    assert_eq!(settings.user_name_attribute, "userPrincipalName");
    assert_eq!(
        settings.group_base_dn,
        "OU=Groups,DC=corp,DC=example,DC=com"
    );
    assert_eq!(settings.scope_groups, ["Taskade Users"]);
    assert_eq!(
        config.directory().describe(),
        "ldap ldaps://dc1.corp.example.com"
    );
}

#[test]
fn ldap_settings_are_checked_and_named() {
    let ldap = |keys: &str| {
        load(
            &format!(
                "[directory]\nkind = \"ldap\"\nbind_dn = \"cn=svc,dc=example,dc=com\"\n\
                 base_dn = \"dc=example,dc=com\"\n{keys}{WORKSPACE}"
            ),
            &[],
        )
    };
    let password = "bind_password_file = \"pw\"\n";
    for (keys, key, says) in [
        // The bind password would cross the network unencrypted.
        (
            "url = \"ldap://dc1\"\nbind_password_file = \"pw\"\n",
            "directory.url",
            "unencrypted to dc1: use ldaps:// or start_tls = true, or set directory.allow_cleartext",
        ),
        (
            "url = \"ldap://dc1\"\nstart_tls = true\n",
            "directory.bind_password_file",
            "missing",
        ),
        (
            "url = \"ldap://dc1\"\nstart_tls = true\nbind_password = \"a\"\nbind_password_file = \"pw\"\n",
            "directory.bind_password",
            "not both",
        ),
        (
            "url = \"https://dc1\"\nbind_password_file = \"pw\"\n",
            "directory.url",
            "ldap://",
        ),
        (
            "url = \"ldaps://dc1\"\nstart_tls = true\nbind_password_file = \"pw\"\n",
            "directory.start_tls",
            "only with ldap://",
        ),
        (
            "url = \"ldap://dc1/dc=example,dc=com\"\nbind_password_file = \"pw\"\n",
            "directory.url",
            "directory.base_dn",
        ),
        (
            "url = \"ldap://dc1\"\nstart_tls = true\nbind_password_file = \"pw\"\nuser_filter = \"(&(objectClass=user)\"\n",
            "directory.user_filter",
            "RFC 4515",
        ),
        (
            "url = \"ldap://dc1\"\nstart_tls = true\nbind_password_file = \"pw\"\ndisabled_filter = \"(nsAccountLock=TRUE\"\n",
            "directory.disabled_filter",
            "RFC 4515",
        ),
        // A Global Catalog lacks accountExpires and other domains' group members.
        (
            "url = \"ldaps://gc.corp.example.com:3269\"\nbind_password_file = \"pw\"\n",
            "directory.url",
            "port 3269 is a Global Catalog",
        ),
        (
            "url = \"ldap://dc1:3268\"\nstart_tls = true\nbind_password_file = \"pw\"\n",
            "directory.url",
            "domain controller (port 389, or 636 with ldaps://)",
        ),
        (
            "url = \"ldap://dc1\"\nstart_tls = true\nbind_password_file = \"pw\"\npage_size = 0\n",
            "directory.page_size",
            "from 1 to 2147483647, not 0",
        ),
        (
            "url = \"ldap://dc1\"\nstart_tls = true\nbind_password_file = \"pw\"\nflavor = \"novell\"\n",
            "key `directory.flavor`",
            "unknown variant `novell`, expected `active_directory` or `openldap`",
        ),
    ] {
        let error = ldap(keys).unwrap_err();
        assert!(
            error.contains(key) && error.contains(says),
            "{keys}: {error}"
        );
        assert!(error.contains("seatwarden.toml"), "{error}");
    }
    let openldap = ldap(&format!(
        "url = \"ldap://dc1:389\"\nstart_tls = true\nflavor = \"openldap\"\n{password}"
    ))
    .unwrap();
    let DirectoryConfig::Ldap {
        bind_password_file, ..
    } = &openldap.directory
    else {
        panic!("expected ldap");
    };
    assert!(bind_password_file.as_ref().unwrap().is_absolute());
    let Directory::Ldap(source) = openldap.directory() else {
        panic!("expected an LDAP source");
    };
    assert_eq!(source.settings().id_attribute, "entryUUID");
    assert_eq!(
        source.settings().user_filter,
        "(&(objectClass=inetOrgPerson)(mail=*))",
        "only entries with the attribute that becomes the userName"
    );
    assert_eq!(source.settings().group_base_dn, "dc=example,dc=com");
}

const WORKSPACE: &str =
    "\n[workspace]\nurl = \"https://scim.example.com/scim/v2\"\ntoken = \"t\"\n";

#[test]
fn connector_auth_must_be_exactly_one_way() {
    let okta = |auth: &str| {
        load(
            &format!(
                "[directory]\nkind = \"okta\"\nurl = \"https://acme.okta.com\"\n{auth}{WORKSPACE}"
            ),
            &[],
        )
    };
    let missing = okta("").unwrap_err();
    assert!(missing.contains("directory.token_file"), "{missing}");
    let both =
        okta("token = \"a\"\nclient_id = \"c\"\nprivate_key_file = \"k.pem\"\n").unwrap_err();
    assert!(both.contains("not both"), "{both}");
    let half = okta("client_id = \"c\"\n").unwrap_err();
    assert!(half.contains("private_key_file"), "{half}");
    let oauth = okta("client_id = \"c\"\nprivate_key_file = \"k.pem\"\nkey_id = \"k1\"\n").unwrap();
    // Relative key files resolve against the configuration file's directory.
    let DirectoryConfig::Okta {
        private_key_file, ..
    } = &oauth.directory
    else {
        panic!("expected okta");
    };
    assert!(private_key_file.as_ref().unwrap().is_absolute());

    let entra = |auth: &str| {
        load(
            &format!(
                "[directory]\nkind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\n{auth}{WORKSPACE}"
            ),
            &[],
        )
    };
    let missing = entra("").unwrap_err();
    assert!(
        missing.contains("directory.client_secret_file"),
        "{missing}"
    );
    let both = entra(
        "client_secret = \"s\"\ncertificate_file = \"c.pem\"\nprivate_key_file = \"k.pem\"\n",
    )
    .unwrap_err();
    assert!(both.contains("not both"), "{both}");
    let half = entra("certificate_file = \"c.pem\"\n").unwrap_err();
    assert!(half.contains("private_key_file"), "{half}");
    entra("client_secret_file = \"secret\"\n").unwrap();
}

#[test]
fn connector_secrets_are_redacted_and_bad_urls_name_the_key() {
    let config = load(
        &format!(
            "[directory]\nkind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\n\
             client_secret = \"graph-secret-value\"{WORKSPACE}"
        ),
        &[],
    )
    .unwrap();
    let rendered = config.to_redacted_toml();
    assert!(!rendered.contains("graph-secret-value"), "{rendered}");
    assert!(!format!("{config:?}").contains("graph-secret-value"));
    assert!(!format!("{:?}", config.directory()).contains("graph-secret-value"));

    let bad = load(
        &format!(
            "[directory]\nkind = \"okta\"\nurl = \"ftp://acme.okta.com\"\ntoken = \"x\"{WORKSPACE}"
        ),
        &[],
    )
    .unwrap_err();
    assert!(bad.contains("directory.url"), "{bad}");
    let unknown = load(
        &format!("[directory]\nkind = \"okta\"\nurl = \"https://a.okta.com\"\ntoken = \"x\"\ntokn = \"y\"{WORKSPACE}"),
        &[],
    )
    .unwrap_err();
    assert!(unknown.contains("tokn"), "{unknown}");
}

#[test]
fn errors_inside_the_directory_table_name_the_field() {
    let ldap = |keys: &str, env: &[(&str, &str)]| {
        load(
            &format!(
                "[directory]\nkind = \"ldap\"\nurl = \"ldap://dc1\"\nbind_dn = \"cn=svc\"\n\
                 bind_password_file = \"pw\"\nbase_dn = \"dc=example,dc=com\"\n{keys}{WORKSPACE}"
            ),
            env,
        )
        .unwrap_err()
    };
    for (keys, key) in [
        ("flavor = \"openldap2\"\n", "directory.flavor"),
        ("page_size = \"many\"\n", "directory.page_size"),
        ("page_size = -5\n", "directory.page_size"),
        ("start_tls = \"yes\"\n", "directory.start_tls"),
        (
            "bind_pasword_file = \"pw\"\n",
            "directory.bind_pasword_file",
        ),
    ] {
        let error = ldap(keys, &[]);
        assert!(
            error.contains(&format!("seatwarden.toml: key `{key}`:")),
            "{keys}: {error}"
        );
    }
    let from_env = ldap("", &[("SEATWARDEN__DIRECTORY__FLAVOR", "ad")]);
    assert!(
        from_env.starts_with(
            "environment variable SEATWARDEN__DIRECTORY__FLAVOR: key `directory.flavor`: unknown variant `ad`"
        ),
        "{from_env}"
    );
    let okta = load(
        &format!("[directory]\nkind = \"okta\"\nurl = \"acme.okta.com\"\ntoken = \"x\"{WORKSPACE}"),
        &[],
    )
    .unwrap_err();
    assert!(okta.contains("key `directory.url`"), "{okta}");
    // Two fields hold the refused value: naming either could send someone to the
    // wrong line, so only the table is named.
    let ambiguous = ldap("flavor = \"x\"\nuser_name_attribute = \"x\"\n", &[]);
    assert!(
        ambiguous.contains("key `directory`: unknown variant `x`"),
        "{ambiguous}"
    );
}

/// Okta and Entra take the attribute that becomes the userName by its provider
/// name; any other value is refused naming the key and the choices.
#[test]
fn the_user_name_attribute_of_okta_and_entra() {
    use seatwarden::directory::{EntraUserName, OktaUserName};
    let okta = |keys: &str| {
        load(
            &format!(
                "[directory]\nkind = \"okta\"\nurl = \"https://acme.okta.com\"\n\
                 token = \"x\"\n{keys}{WORKSPACE}"
            ),
            &[],
        )
    };
    let entra = |keys: &str| {
        load(
            &format!(
                "[directory]\nkind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\n\
                 client_secret = \"s\"\n{keys}{WORKSPACE}"
            ),
            &[],
        )
    };
    let okta_attribute = |config: Config| match config.directory {
        DirectoryConfig::Okta {
            user_name_attribute,
            ..
        } => user_name_attribute,
        _ => panic!("expected okta"),
    };
    let entra_attribute = |config: Config| match config.directory {
        DirectoryConfig::Entra {
            user_name_attribute,
            ..
        } => user_name_attribute,
        _ => panic!("expected entra"),
    };
    assert_eq!(okta_attribute(okta("").unwrap()), OktaUserName::Login);
    assert_eq!(
        okta_attribute(okta("user_name_attribute = \"email\"\n").unwrap()),
        OktaUserName::Email
    );
    assert_eq!(
        entra_attribute(entra("").unwrap()),
        EntraUserName::UserPrincipalName
    );
    assert_eq!(
        entra_attribute(entra("user_name_attribute = \"mail\"\n").unwrap()),
        EntraUserName::Mail
    );
    let error = okta("user_name_attribute = \"mail\"\n").unwrap_err();
    assert!(
        error.contains("key `directory.user_name_attribute`")
            && error.contains("expected `login` or `email`"),
        "{error}"
    );
    let error = entra("user_name_attribute = \"upn\"\n").unwrap_err();
    assert!(
        error.contains("key `directory.user_name_attribute`")
            && error.contains("expected `userPrincipalName` or `mail`"),
        "{error}"
    );
}

#[test]
fn the_scim_example_loads() {
    let config = example("scim.example.toml");
    let Directory::Scim(source) = config.directory() else {
        panic!("expected a SCIM source");
    };
    assert_eq!(source.url().as_str(), "https://idp.example.com/scim/v2");
    assert_eq!(source.settings().requests_per_second, 10);
    assert_eq!(
        format!("{:?}", source.settings().token),
        "file /run/credentials/seatwarden.service/directory-token"
    );
}

#[test]
fn scim_directory_settings_are_checked_and_named() {
    let scim = |keys: &str| {
        load(
            &format!("[directory]\nkind = \"scim\"\n{keys}{WORKSPACE}"),
            &[],
        )
    };
    for (keys, key, says) in [
        (
            "url = \"https://idp.example.com/scim/v2\"\n",
            "directory.token_file",
            "missing",
        ),
        (
            "url = \"https://idp.example.com/scim/v2\"\ntoken = \"a\"\ntoken_file = \"t\"\n",
            "directory.token",
            "not both",
        ),
        (
            "url = \"ldap://idp.example.com\"\ntoken_file = \"t\"\n",
            "directory.url",
            "http",
        ),
        (
            "url = \"https://idp.example.com/scim/v2?tenant=1\"\ntoken_file = \"t\"\n",
            "directory.url",
            "query",
        ),
        (
            "url = \"https://idp.example.com/scim/v2\"\ntoken_file = \"t\"\npage_size = 0\n",
            "directory.page_size",
            "from 1 to 4294967295, not 0",
        ),
        (
            "url = \"https://idp.example.com/scim/v2\"\ntoken_file = \"t\"\nmax_concurrency = 0\n",
            "directory.max_concurrency",
            "from 1 to 1000, not 0",
        ),
        (
            "url = \"https://idp.example.com/scim/v2\"\ntoken_file = \"t\"\npagination = \"offset\"\n",
            "directory.pagination",
            "unknown variant `offset`, expected one of `auto`, `index`, `cursor`",
        ),
        (
            "url = \"https://idp.example.com/scim/v2\"\ntoken_file = \"t\"\nrole_attribute = \"roles\"\n",
            "directory.role_attribute",
            "unknown field",
        ),
    ] {
        let error = scim(keys).unwrap_err();
        assert!(
            error.contains(&format!("key `{key}`")) && error.contains(says),
            "{keys}: {error}"
        );
    }
    let config = scim(
        "url = \"https://idp.example.com/scim/v2\"\ntoken = \"idp-secret-token\"\npage_size = 50\n",
    )
    .unwrap();
    assert!(!config.to_redacted_toml().contains("idp-secret-token"));
    let Directory::Scim(source) = config.directory() else {
        panic!("expected a SCIM source");
    };
    assert_eq!(source.url().as_str(), "https://idp.example.com/scim/v2");
    assert_eq!(source.settings().page_size, 50);
    assert_eq!(source.settings().max_concurrency, 4);
    assert!(!format!("{source:?}").contains("idp-secret-token"));
}

#[test]
fn deleting_needs_a_retention_period_that_is_named_when_wrong() {
    let deprovision = |body: &str| format!("{MINIMAL}\n[deprovision]\n{body}\n");
    let err = load(&deprovision("action = \"delete\""), &[]).unwrap_err();
    assert!(err.contains("deprovision.delete_after"), "{err}");
    assert!(err.contains("missing"), "{err}");
    let err = load(&deprovision("delete_after = \"30d\""), &[]).unwrap_err();
    assert!(err.contains("deprovision.delete_after"), "{err}");
    assert!(err.contains("only used with"), "{err}");
    let err = load(
        &deprovision("action = \"delete\"\ndelete_after = \"a month\""),
        &[],
    )
    .unwrap_err();
    assert!(err.contains("deprovision.delete_after"), "{err}");
    assert!(err.contains("invalid duration"), "{err}");

    let config = load(
        &deprovision("action = \"delete\"\ndelete_after = \"30d\""),
        &[],
    )
    .unwrap();
    assert_eq!(
        config.delete_after(),
        Some(Duration::from_secs(30 * 86_400))
    );
    let config = load(
        &deprovision("action = \"delete\"\ndelete_after = \"0s\""),
        &[],
    )
    .unwrap();
    assert_eq!(config.delete_after(), Some(Duration::ZERO));
    assert_eq!(load(MINIMAL, &[]).unwrap().delete_after(), None);
}

/// `SCOPE_GROUPS="A, B"` as people type it: split on the comma, `" B"` would match
/// no group, and everyone in B would be out of scope (and deactivated). Names are
/// trimmed; an empty one (an empty variable) is an error naming the key, not a
/// scope that matches nobody; a mapping name with space around it is refused.
#[test]
fn list_names_are_trimmed_and_empty_ones_refused() {
    let config = load(
        MINIMAL,
        &[
            (
                "SEATWARDEN__POLICY__SCOPE_GROUPS",
                "Taskade Users, Contractors",
            ),
            (
                "SEATWARDEN__SAFETY__PROTECTED",
                "breakglass@acme.com, svc-*@acme.com ",
            ),
        ],
    )
    .unwrap();
    assert_eq!(config.policy.scope_groups, ["Taskade Users", "Contractors"]);
    assert_eq!(
        config.safety.protected,
        ["breakglass@acme.com", "svc-*@acme.com"]
    );
    let err = load(MINIMAL, &[("SEATWARDEN__POLICY__SCOPE_GROUPS", "")]).unwrap_err();
    assert!(err.contains("policy.scope_groups"), "{err}");
    assert!(err.contains("empty name"), "{err}");
    let err = load(
        MINIMAL,
        &[("SEATWARDEN__SAFETY__PROTECTED", "a@x.com,,b@x.com")],
    )
    .unwrap_err();
    assert!(err.contains("safety.protected"), "{err}");
    let err = load(
        &format!(
            "{MINIMAL}\n[[policy.mapping]]\ngroup = \"Engineering \"\nworkspace_group = \"Eng\"\nrole = \"Editor\"\n"
        ),
        &[],
    )
    .unwrap_err();
    assert!(err.contains("policy.mapping[0].group"), "{err}");
}

/// A value set by an environment variable that fails a check names the variable,
/// not the file (which does not hold it).
#[test]
fn a_bad_value_from_the_environment_names_the_variable() {
    let err = load(MINIMAL, &[("SEATWARDEN__WORKSPACE__PAGE_SIZE", "0")]).unwrap_err();
    assert!(
        err.starts_with("environment variable SEATWARDEN__WORKSPACE__PAGE_SIZE"),
        "{err}"
    );
    assert!(err.contains("workspace.page_size"), "{err}");
    let err = load(MINIMAL, &[("SEATWARDEN__HTTP__LISTEN", "0.0.0.0:94640")]).unwrap_err();
    assert!(
        err.starts_with("environment variable SEATWARDEN__HTTP__LISTEN"),
        "{err}"
    );
    // The same check on a value from the file names the file.
    let err = load(
        &format!("{MINIMAL}\n[safety]\nmax_deletion_percent = 150\n"),
        &[],
    )
    .unwrap_err();
    assert!(err.contains("seatwarden.toml"), "{err}");

    // A value none of a key's choices, refused while the configuration is read
    // (which names no origin): the variable setting that key overrides the file.
    for (name, value, key) in [
        (
            "SEATWARDEN__POLICY__DEFAULT_ROLE",
            "owner",
            "policy.default_role",
        ),
        (
            "SEATWARDEN__DEPROVISION__ACTION",
            "remove",
            "deprovision.action",
        ),
        (
            "SEATWARDEN__POLICY__UNMATCHED_ACCOUNTS",
            "Deactivate",
            "policy.unmatched_accounts",
        ),
    ] {
        let err = load(MINIMAL, &[(name, value)]).unwrap_err();
        assert!(
            err.starts_with(&format!("environment variable {name}")) && err.contains(key),
            "{err}"
        );
        assert!(!err.contains("seatwarden.toml"), "{err}");
        // The same value in the file names the file.
        let (section, field) = key.split_once('.').unwrap();
        let err = load(
            &format!("{MINIMAL}\n[{section}]\n{field} = \"{value}\"\n"),
            &[],
        )
        .unwrap_err();
        assert!(err.contains("seatwarden.toml"), "{err}");
    }

    // A secret file a variable names, unreadable when used: the variable again.
    let config = load(
        &MINIMAL.replace("token = \"s3cr3t-token-value\"", ""),
        &[("SEATWARDEN__WORKSPACE__TOKEN_FILE", "/nonexistent/token")],
    )
    .unwrap();
    let err = config.workspace_token().unwrap_err().to_string();
    assert!(
        err.starts_with("environment variable SEATWARDEN__WORKSPACE__TOKEN_FILE")
            && err.contains("/nonexistent/token"),
        "{err}"
    );
    let err = load(
        &format!("{MINIMAL}token_file = \"/nonexistent/token\"\n"),
        &[],
    )
    .unwrap_err();
    assert!(err.contains("seatwarden.toml"), "{err}");
}

/// A token, a client secret or a password sent without TLS to another host is
/// refused, naming the key and the way out; loopback, TLS and an explicit
/// `allow_cleartext` pass.
#[test]
fn cleartext_credentials_to_another_host_are_refused_unless_allowed() {
    let workspace = |url: &str, extra: &str| {
        load(
            &format!(
                "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
                 [workspace]\nurl = \"{url}\"\ntoken = \"t\"\n{extra}"
            ),
            &[],
        )
    };
    let err = workspace("http://scim.example.com/scim/v2", "").unwrap_err();
    assert!(
        err.contains("key `workspace.url`")
            && err.contains("sends the workspace token unencrypted to scim.example.com")
            && err.contains("workspace.allow_cleartext = true"),
        "{err}"
    );
    for ok in [
        "https://scim.example.com/scim/v2",
        "http://127.0.0.1:8080/scim/v2",
        "http://localhost:8080/scim/v2",
        "http://[::1]:8080/scim/v2",
    ] {
        workspace(ok, "").unwrap();
    }
    workspace(
        "http://scim.example.com/scim/v2",
        "allow_cleartext = true\n",
    )
    .unwrap();

    let okta = |url: &str, env: &[(&str, &str)]| {
        load(
            &format!("[directory]\nkind = \"okta\"\nurl = \"{url}\"\ntoken = \"t\"\n{WORKSPACE}"),
            env,
        )
    };
    let err = okta("http://acme.okta.com", &[]).unwrap_err();
    assert!(
        err.contains("key `directory.url`") && err.contains("directory.allow_cleartext"),
        "{err}"
    );
    // The tagged [directory] table takes the flag from the environment as text.
    okta(
        "http://acme.okta.com",
        &[("SEATWARDEN__DIRECTORY__ALLOW_CLEARTEXT", "true")],
    )
    .unwrap();
    let err = load(
        &format!(
            "[directory]\nkind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\n\
             client_secret = \"s\"\ngraph_url = \"http://graph.internal\"\n{WORKSPACE}"
        ),
        &[],
    )
    .unwrap_err();
    assert!(err.contains("key `directory.graph_url`"), "{err}");

    let smtp = |url: &str, extra: &str| {
        load(
            &format!(
                "{MINIMAL}[report.email]\nsmtp_url = \"{url}\"\nfrom = \"sw@example.com\"\n\
                 to = [\"a@example.com\"]\n{extra}"
            ),
            &[],
        )
    };
    let login = "username = \"sw\"\npassword = \"hunter2\"\n";
    let err = smtp("smtp://mail.example.com", login).unwrap_err();
    assert!(
        err.contains("key `report.email.smtp_url`")
            && err.contains("the SMTP login unencrypted")
            && err.contains("report.email.allow_cleartext"),
        "{err}"
    );
    // Without a login only the report travels in clear: a local relay on port 25.
    smtp("smtp://mail.example.com", "").unwrap();
    smtp("smtp://mail.example.com?tls=starttls", login).unwrap();
    smtp("smtps://mail.example.com", login).unwrap();
    smtp("smtp://127.0.0.1:2525", login).unwrap();
    smtp(
        "smtp://mail.example.com",
        &format!("{login}allow_cleartext = true\n"),
    )
    .unwrap();
}

/// An id the connector puts in a URL path is refused at load when it cannot stand
/// there (`..` would send the request to the parent path).
#[test]
fn ids_that_would_leave_their_url_path_are_refused() {
    let err = load(
        &format!(
            "[directory]\nkind = \"okta\"\nurl = \"https://acme.okta.com\"\ntoken = \"t\"\napp_id = \"..\"\n{WORKSPACE}"
        ),
        &[],
    )
    .unwrap_err();
    assert!(err.contains("key `directory.app_id`"), "{err}");
    let err = load(
        &format!(
            "[directory]\nkind = \"entra\"\ntenant_id = \"%2E%2e\"\nclient_id = \"c\"\nclient_secret = \"s\"\n{WORKSPACE}"
        ),
        &[],
    )
    .unwrap_err();
    assert!(err.contains("key `directory.tenant_id`"), "{err}");
    load(
        &format!(
            "[directory]\nkind = \"okta\"\nurl = \"https://acme.okta.com\"\ntoken = \"t\"\napp_id = \"0oa1b2c3\"\n{WORKSPACE}"
        ),
        &[],
    )
    .unwrap();
}

/// The `config` crate would round a fraction given where a count belongs, so a
/// threshold of 2.5 would let three through: refused, naming the key and the file.
/// A fraction where a fraction belongs, and a whole number from the environment
/// over the file's fraction, are fine.
#[test]
fn a_fraction_for_a_whole_number_is_refused() {
    let directory = "[directory]\nkind = \"file\"\npath = \"d.json\"\n";
    for (text, key) in [
        (
            format!("{directory}{WORKSPACE}[safety]\nmax_deprovisions = 2.5\n"),
            "safety.max_deprovisions",
        ),
        (
            format!("{directory}{WORKSPACE}max_concurrency = 4.5\n"),
            "workspace.max_concurrency",
        ),
        (
            format!(
                "{directory}{WORKSPACE}[[policy.mapping]]\ngroup = \"G\"\nworkspace_group = \"W\"\n\
                 role = \"Editor\"\n[safety.circuit]\nwindow = 20.5\n"
            ),
            "safety.circuit.window",
        ),
    ] {
        let error = load(&text, &[]).unwrap_err();
        assert!(error.contains(&format!("key `{key}`")), "{error}");
        assert!(error.contains("not a whole number"), "{error}");
        assert!(error.contains("seatwarden.toml"), "{error}");
    }
    let whole = format!("{directory}{WORKSPACE}max_concurrency = 4.0\n");
    assert_eq!(load(&whole, &[]).unwrap().workspace.max_concurrency, 4);
    let fine = format!("{directory}{WORKSPACE}[safety]\nmax_deprovision_percent = 2.5\n");
    assert_eq!(
        load(&fine, &[]).unwrap().safety.max_deprovision_percent,
        2.5
    );
    let overridden = format!("{directory}{WORKSPACE}[safety]\nmax_deprovisions = 2.5\n");
    let config = load(
        &overridden,
        &[("SEATWARDEN__SAFETY__MAX_DEPROVISIONS", "2")],
    )
    .unwrap();
    assert_eq!(config.safety.max_deprovisions, 2);
}

/// A variable with one `_` after the prefix is no override and is not read: it is
/// warned about, naming it and the override it was probably meant to be, so that
/// nobody believes a token or path is set that is not. The binary's own variables
/// are not warned about.
#[test]
fn a_variable_spelt_with_one_underscore_is_warned_about_with_the_override_meant() {
    let email = format!(
        "{MINIMAL}\n[report.email]\nsmtp_url = \"smtps://mail.example.com\"\n\
         from = \"sw@example.com\"\nto = [\"a@example.com\"]\n"
    );
    for (name, meant) in [
        (
            "SEATWARDEN_WORKSPACE__TOKEN",
            Some("SEATWARDEN__WORKSPACE__TOKEN"),
        ),
        ("SEATWARDEN_STATE_PATH", Some("SEATWARDEN__STATE__PATH")),
        (
            "SEATWARDEN_WORKSPACE_TOKEN_FILE",
            Some("SEATWARDEN__WORKSPACE__TOKEN_FILE"),
        ),
        (
            "SEATWARDEN_REPORT_EMAIL_TO",
            Some("SEATWARDEN__REPORT__EMAIL__TO"),
        ),
        (
            "seatwarden__workspace__token",
            Some("SEATWARDEN__WORKSPACE__TOKEN"),
        ),
        ("SEATWARDEN_TOKEN", None),
    ] {
        let config = load(&email, &[(name, "other-token")]).unwrap();
        let warnings = config.warnings();
        let warning = warnings
            .iter()
            .find(|w| w.contains(name))
            .unwrap_or_else(|| panic!("{name}: {warnings:?}"));
        assert!(
            warning.starts_with(&format!("environment variable {name} is not read")),
            "{warning}"
        );
        match meant {
            Some(meant) => assert!(
                warning.ends_with(&format!("did you mean {meant}?")),
                "{warning}"
            ),
            None => assert!(!warning.contains("did you mean"), "{warning}"),
        }
        assert!(!warning.contains("other-token"), "{warning}");
    }
    let config = load(
        MINIMAL,
        &[
            ("SEATWARDEN_CONFIG", "/etc/seatwarden/seatwarden.toml"),
            ("SEATWARDEN_OPERATOR", "alice"),
            ("SEATWARDEN_SANDBOX_TOKEN", "t"),
            ("SEATWARDEN__WORKSPACE__PAGE_SIZE", "50"),
        ],
    )
    .unwrap();
    let warnings = config.warnings();
    assert!(
        !warnings.iter().any(|w| w.contains("environment variable")),
        "{warnings:?}"
    );
}

/// The warning is seen on every command that loads the configuration, not only
/// `check-config`: here `status`, which then fails for want of a state database.
#[test]
fn an_unread_variable_is_warned_about_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "seatwarden.toml", MINIMAL);
    for command in ["check-config", "status"] {
        let mut binary = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"));
        binary
            .args(["--config", config.to_str().unwrap(), command])
            .env_remove("SEATWARDEN_CONFIG")
            .env("SEATWARDEN_STATE_PATH", "elsewhere.db");
        for (name, _) in std::env::vars() {
            if name.starts_with("SEATWARDEN_") && name != "SEATWARDEN_STATE_PATH" {
                binary.env_remove(name);
            }
        }
        let out = binary.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(
                "environment variable SEATWARDEN_STATE_PATH is not read: an override is \
                 spelt SEATWARDEN__SECTION__KEY"
            ) && stderr.contains("did you mean SEATWARDEN__STATE__PATH?"),
            "{command}: {stderr}"
        );
    }
}

/// A value typed wrong in the file is refused, naming the key and the file, where
/// the `config` crate would convert it: the text `"100"` for a number, `"yes"`
/// or `1` for a boolean. The `[directory]` table, read by its own code, too.
#[test]
fn a_value_of_the_wrong_type_in_the_file_is_refused() {
    let email = "\n[report.email]\nsmtp_url = \"smtps://mail.example.com\"\n\
                 from = \"sw@example.com\"\nto = [\"a@example.com\"]\n";
    let ldap = "[directory]\nkind = \"ldap\"\nurl = \"ldaps://dc1\"\nbind_dn = \"cn=svc\"\n\
                bind_password = \"p\"\nbase_dn = \"dc=example\"\n";
    for (text, key, message) in [
        (
            format!("{MINIMAL}page_size = \"100\"\n"),
            "workspace.page_size",
            "expected a whole number from 1 to 4294967295, found the text \"100\" (write it \
             without quotes)",
        ),
        (
            format!("{MINIMAL}{email}allow_cleartext = \"yes\"\n"),
            "report.email.allow_cleartext",
            "expected true or false, found the text \"yes\" (write true or false without quotes)",
        ),
        (
            format!("{MINIMAL}{email}allow_cleartext = \"true\"\n"),
            "report.email.allow_cleartext",
            "expected true or false, found the text \"true\" (write it without quotes)",
        ),
        (
            format!("{MINIMAL}allow_cleartext = 1\n"),
            "workspace.allow_cleartext",
            "expected true or false, found the number 1",
        ),
        (
            format!("{MINIMAL}\n[safety]\nmax_deprovision_percent = \"2.5\"\n"),
            "safety.max_deprovision_percent",
            "expected a number from 0 to 100, such as 5 or 2.5, found the text \"2.5\" (write it \
             without quotes)",
        ),
        (
            format!("{MINIMAL}\n[safety]\nmax_deprovisions = true\n"),
            "safety.max_deprovisions",
            "expected a whole number, 0 or more, found true",
        ),
        (
            format!("{ldap}page_size = \"500\"\n{WORKSPACE}"),
            "directory.page_size",
            "expected a whole number from 1 to 2147483647, found the text \"500\"",
        ),
    ] {
        let error = load(&text, &[]).unwrap_err();
        assert!(
            error.contains("seatwarden.toml: key `")
                && error.contains(&format!("key `{key}`: {message}")),
            "{error}"
        );
    }
    // Overridden by a variable, the file's value is not the one used.
    let config = load(
        &format!("{MINIMAL}page_size = \"100\"\n"),
        &[("SEATWARDEN__WORKSPACE__PAGE_SIZE", "50")],
    )
    .unwrap();
    assert_eq!(config.workspace.page_size, 50);
    // A whole number where a fraction may stand is a number all the same.
    let config = load(
        &format!("{MINIMAL}\n[safety]\nmax_deprovision_percent = 5\n"),
        &[],
    )
    .unwrap();
    assert_eq!(config.safety.max_deprovision_percent, 5.0);
}

/// A variable's value is text: it is read as the key's type strictly, `true` or
/// `false` (in any case) for a boolean and digits for a number, not as the
/// `config` crate reads it (`yes`, `on`, `1` for true; `yes` for the number 1).
#[test]
fn a_boolean_or_number_from_the_environment_is_read_strictly() {
    let email = format!(
        "{MINIMAL}\n[report.email]\nsmtp_url = \"smtp://mail.example.com\"\n\
         from = \"sw@example.com\"\nto = [\"a@example.com\"]\n"
    );
    let name = "SEATWARDEN__REPORT__EMAIL__ALLOW_CLEARTEXT";
    for (value, expected) in [("true", true), ("TRUE", true), ("false", false)] {
        let config = load(&email, &[(name, value)]).unwrap();
        assert_eq!(config.report.email.unwrap().allow_cleartext, expected);
    }
    for value in ["yes", "1", "on", "no", "0"] {
        let error = load(&email, &[(name, value)]).unwrap_err();
        assert!(
            error.starts_with(&format!(
                "environment variable {name}: key `report.email.allow_cleartext`: \
                 expected true or false, found {value:?}"
            )),
            "{error}"
        );
    }
    for (name, value) in [
        ("SEATWARDEN__WORKSPACE__PAGE_SIZE", "yes"),
        ("SEATWARDEN__WORKSPACE__ALLOW_CLEARTEXT", "on"),
        ("SEATWARDEN__DIRECTORY__PATH", "ok"),
    ] {
        let result = load(MINIMAL, &[(name, value)]);
        match name {
            // Text where text belongs.
            "SEATWARDEN__DIRECTORY__PATH" => assert!(result.is_ok(), "{result:?}"),
            _ => {
                let error = result.unwrap_err();
                assert!(
                    error.starts_with(&format!("environment variable {name}")),
                    "{error}"
                );
            }
        }
    }
}

/// An empty inline secret is refused at load, naming the key and where it came
/// from: an empty LDAP bind password is an unauthenticated bind (RFC 4513).
#[test]
fn empty_inline_secrets_are_refused_naming_the_key() {
    let ldap = "[directory]\nkind = \"ldap\"\nurl = \"ldaps://dc1\"\nbind_dn = \"cn=svc\"\n\
                base_dn = \"dc=example\"\n";
    let okta = "[directory]\nkind = \"okta\"\nurl = \"https://acme.okta.com\"\n";
    let scim = "[directory]\nkind = \"scim\"\nurl = \"https://idp.example.com/scim/v2\"\n";
    let entra = "[directory]\nkind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\n";
    let email = "\n[report.email]\nsmtp_url = \"smtps://mail.example.com\"\n\
                 from = \"sw@example.com\"\nto = [\"a@example.com\"]\nusername = \"sw\"\n";
    for (text, key) in [
        (
            format!("{ldap}bind_password = \"\"\n{WORKSPACE}"),
            "directory.bind_password",
        ),
        (
            format!("{ldap}bind_password = \"  \"\n{WORKSPACE}"),
            "directory.bind_password",
        ),
        (
            format!("{okta}token = \"\"\n{WORKSPACE}"),
            "directory.token",
        ),
        (
            format!("{scim}token = \"\"\n{WORKSPACE}"),
            "directory.token",
        ),
        (
            format!("{entra}client_secret = \"\\t\"\n{WORKSPACE}"),
            "directory.client_secret",
        ),
        (
            format!(
                "{okta}token = \"x\"\n[workspace]\nurl = \"https://s.example.com\"\ntoken = \"\"\n"
            ),
            "workspace.token",
        ),
        (
            format!("{MINIMAL}{email}password = \"\"\n"),
            "report.email.password",
        ),
    ] {
        let error = load(&text, &[]).unwrap_err();
        assert!(
            error.contains(&format!("key `{key}`")) && error.contains("is empty"),
            "{text}: {error}"
        );
        assert!(error.contains("seatwarden.toml"), "{error}");
    }
    // Set empty from the environment, the variable is named.
    let error = load(
        &format!("{ldap}bind_password_file = \"pw\"\n{WORKSPACE}"),
        &[("SEATWARDEN__DIRECTORY__BIND_PASSWORD", "")],
    )
    .unwrap_err();
    assert!(
        error.contains("environment variable SEATWARDEN__DIRECTORY__BIND_PASSWORD")
            && error.contains("is empty"),
        "{error}"
    );
    let error = load(MINIMAL, &[("SEATWARDEN__WORKSPACE__TOKEN", "")]).unwrap_err();
    assert!(
        error.contains("environment variable SEATWARDEN__WORKSPACE__TOKEN")
            && error.contains("is empty"),
        "{error}"
    );
    // A secret that is there still loads.
    load(&format!("{ldap}bind_password = \"pw\"\n{WORKSPACE}"), &[]).unwrap();
    load(&format!("{MINIMAL}{email}password = \"p\"\n"), &[]).unwrap();
}

/// Plain `smtp://` to a relay that is not loopback is allowed (internal relays on
/// port 25), but warned about: digests and alerts name leavers.
#[test]
fn plain_smtp_to_a_remote_relay_is_warned_about() {
    // A state folder that outlives `load`'s temporary one: no warning of its own.
    let minimal = format!(
        "{MINIMAL}\n[state]\npath = \"{}\"\n",
        std::env::temp_dir().join("seatwarden-state.db").display()
    );
    let email = |url: &str, extra: &str| {
        load(
            &format!(
                "{minimal}\n[report.email]\nsmtp_url = \"{url}\"\nfrom = \"sw@example.com\"\n\
                 to = [\"a@example.com\"]\n{extra}"
            ),
            &[],
        )
        .unwrap()
        .warnings()
    };
    for url in ["smtp://mail.example.com", "smtp://10.0.0.25:25"] {
        let warnings = email(url, "");
        assert_eq!(warnings.len(), 1, "{url}: {warnings:?}");
        assert!(
            warnings[0].starts_with("report.email.smtp_url:")
                && warnings[0].contains("unencrypted")
                && warnings[0].contains("smtps://")
                && warnings[0].contains("starttls"),
            "{url}: {warnings:?}"
        );
    }
    for url in [
        "smtp://localhost:25",
        "smtp://127.0.0.1",
        "smtp://[::1]:25",
        "smtps://mail.example.com",
        "smtp://mail.example.com:587?tls=starttls",
    ] {
        assert_eq!(email(url, ""), Vec::<String>::new(), "{url}");
    }
    // Said to be trusted: no warning.
    assert!(email("smtp://mail.example.com", "allow_cleartext = true\n").is_empty());
    assert!(load(&minimal, &[]).unwrap().warnings().is_empty());
}

/// A username or password in a URL is refused, naming the key, the file and where
/// the credential goes instead, and never echoing the password: URLs are stored
/// in the database and shown in reports, emails and logs.
#[test]
fn credentials_in_a_url_are_refused_naming_the_key_and_where_they_go() {
    let refused = |text: &str, key: &str, instead: &str| {
        let error = load(text, &[]).unwrap_err();
        assert!(
            error.contains(&format!("key `{key}`"))
                && error.contains("seatwarden.toml")
                && error.contains("username or password")
                && error.contains(instead),
            "{text}: {error}"
        );
        assert!(
            !error.contains("hunter2"),
            "the password is echoed: {error}"
        );
    };
    let workspace = |url: &str| {
        format!(
            "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
             [workspace]\nurl = \"{url}\"\ntoken = \"t\"\n"
        )
    };
    for url in [
        "https://svc:hunter2@scim.example.com/scim/v2",
        "https://svc@scim.example.com/scim/v2",
        "https://:hunter2@scim.example.com/scim/v2",
        "http://svc:hunter2@127.0.0.1:8080/scim/v2",
    ] {
        refused(&workspace(url), "workspace.url", "workspace.token_file");
    }
    load(&workspace("https://scim.example.com/scim/v2"), &[]).unwrap();

    refused(
        &format!(
            "[directory]\nkind = \"okta\"\nurl = \"https://svc:hunter2@acme.okta.com\"\n\
             token = \"t\"\n{WORKSPACE}"
        ),
        "directory.url",
        "directory.token_file",
    );
    refused(
        &format!(
            "[directory]\nkind = \"scim\"\nurl = \"https://svc:hunter2@idp.example.com/scim/v2\"\n\
             token = \"t\"\n{WORKSPACE}"
        ),
        "directory.url",
        "directory.token_file",
    );
    refused(
        &format!(
            "[directory]\nkind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\n\
             client_secret = \"s\"\ngraph_url = \"https://app:hunter2@graph.example.com\"\n\
             {WORKSPACE}"
        ),
        "directory.graph_url",
        "directory.client_secret_file",
    );
    let ldap = |url: &str| {
        format!(
            "[directory]\nkind = \"ldap\"\nurl = \"{url}\"\nbind_dn = \"cn=svc\"\n\
             bind_password = \"pw\"\nbase_dn = \"dc=example\"\n{WORKSPACE}"
        )
    };
    refused(
        &ldap("ldaps://cn=svc:hunter2@dc1.example.com"),
        "directory.url",
        "directory.bind_password_file",
    );
    refused(
        &ldap("ldaps://svc@dc1.example.com:636"),
        "directory.url",
        "directory.bind_password_file",
    );
    load(&ldap("ldaps://dc1.example.com"), &[]).unwrap();
    // Set from the environment, the variable is named instead of the file.
    let error = load(
        MINIMAL,
        &[(
            "SEATWARDEN__WORKSPACE__URL",
            "https://svc:hunter2@scim.example.com/scim/v2",
        )],
    )
    .unwrap_err();
    assert!(
        error.contains("environment variable SEATWARDEN__WORKSPACE__URL")
            && error.contains("username or password")
            && !error.contains("hunter2"),
        "{error}"
    );
}

/// A configuration file every user can read that holds a secret inline is warned
/// about, naming the file, the keys and the way out; group read passes, and a
/// secret set by an environment variable is not in the file.
#[test]
fn a_config_file_holding_secrets_others_can_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let warnings = |text: &str, mode: u32, env: &[(&str, &str)]| {
        let path = write(dir.path(), "seatwarden.toml", text);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::load_with_env(&path, Some(env)).unwrap().warnings()
    };
    let found = warnings(MINIMAL, 0o644, &[]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(&dir.path().join("seatwarden.toml").display().to_string())
            && found[0].contains("holds workspace.token inline")
            && found[0].contains("mode 0644")
            && found[0].contains("token_file")
            && !found[0].contains("s3cr3t"),
        "{found:?}"
    );
    for mode in [0o600, 0o640, 0o400] {
        assert_eq!(
            warnings(MINIMAL, mode, &[]),
            Vec::<String>::new(),
            "{mode:o}"
        );
    }
    let without_secret = MINIMAL.replace("token = \"s3cr3t-token-value\"", "token_file = \"t\"");
    std::fs::write(dir.path().join("t"), "x").unwrap();
    std::fs::set_permissions(dir.path().join("t"), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(warnings(&without_secret, 0o644, &[]), Vec::<String>::new());
    let from_env = warnings(
        &without_secret.replace("token_file = \"t\"", ""),
        0o644,
        &[("SEATWARDEN__WORKSPACE__TOKEN", "from-a-credential")],
    );
    assert_eq!(from_env, Vec::<String>::new());
}

/// A secret file other users of the machine can read (or change) is warned about,
/// naming the key, the file and the mode that silences it; the owner's 0600 and
/// 0400 are fine, and so is group read: systemd credentials show as 0440.
#[test]
fn secret_files_other_users_can_read_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = |name: &str, mode: u32| {
        let path = write(dir.path(), name, "s3cr3t\n");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let warnings = |text: &str| {
        let path = write(dir.path(), "seatwarden.toml", text);
        Config::load_with_env(&path, Some(HashMap::new()))
            .unwrap()
            .warnings()
    };
    let with_token = |mode: u32| {
        secret("workspace-token", mode);
        warnings(
            "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
             [workspace]\nurl = \"https://scim.example.com/scim/v2\"\n\
             token_file = \"workspace-token\"\n",
        )
    };
    for mode in [0o644, 0o444, 0o604, 0o620, 0o666] {
        let found = with_token(mode);
        assert_eq!(found.len(), 1, "{mode:o}: {found:?}");
        assert!(
            found[0].starts_with("workspace.token_file:")
                && found[0].contains(&dir.path().join("workspace-token").display().to_string())
                && found[0].contains(&format!("mode {mode:04o}"))
                && found[0].contains("chmod 0600"),
            "{mode:o}: {found:?}"
        );
        assert!(!found[0].contains("s3cr3t"), "{found:?}");
    }
    for mode in [0o600, 0o400, 0o440, 0o640] {
        assert_eq!(with_token(mode), Vec::<String>::new(), "{mode:o}");
    }

    // Every secret file of the configuration: directory, trigger token, SMTP.
    secret("workspace-token", 0o600);
    secret("bind-password", 0o644);
    secret("trigger-token", 0o604);
    secret("smtp-password", 0o444);
    let found = warnings(
        "[directory]\nkind = \"ldap\"\nurl = \"ldaps://dc1.example.com\"\nbind_dn = \"cn=svc\"\n\
         bind_password_file = \"bind-password\"\nbase_dn = \"dc=example\"\n\
         [workspace]\nurl = \"https://scim.example.com/scim/v2\"\n\
         token_file = \"workspace-token\"\n\
         [http]\ntrigger_token_file = \"trigger-token\"\n\
         [report.email]\nsmtp_url = \"smtps://mail.example.com\"\nfrom = \"sw@example.com\"\n\
         to = [\"a@example.com\"]\nusername = \"sw\"\npassword_file = \"smtp-password\"\n",
    );
    let keys: Vec<&str> = found.iter().filter_map(|w| w.split(':').next()).collect();
    assert_eq!(
        keys,
        [
            "directory.bind_password_file",
            "http.trigger_token_file",
            "report.email.password_file"
        ],
        "{found:?}"
    );
    secret("okta-key.pem", 0o644);
    secret("entra-secret", 0o644);
    secret("scim-token", 0o644);
    for (directory, key) in [
        (
            "kind = \"okta\"\nurl = \"https://acme.okta.com\"\nclient_id = \"c\"\n\
             private_key_file = \"okta-key.pem\"",
            "directory.private_key_file",
        ),
        (
            "kind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\n\
             client_secret_file = \"entra-secret\"",
            "directory.client_secret_file",
        ),
        (
            "kind = \"scim\"\nurl = \"https://idp.example.com/scim/v2\"\n\
             token_file = \"scim-token\"",
            "directory.token_file",
        ),
    ] {
        let found = warnings(&format!(
            "[directory]\n{directory}\n[workspace]\nurl = \"https://scim.example.com/scim/v2\"\n\
             token_file = \"workspace-token\"\n"
        ));
        assert_eq!(found.len(), 1, "{key}: {found:?}");
        assert!(found[0].starts_with(&format!("{key}:")), "{found:?}");
    }
}

/// `check-config` prints the warning for a token file every user can read, and
/// none for one only its owner can.
#[test]
fn check_config_warns_about_a_world_readable_token_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example/directory.json");
    std::fs::copy(&example, dir.path().join("directory.json")).unwrap();
    let token = write(dir.path(), "workspace-token", "very-secret-token\n");
    let config = write(
        dir.path(),
        "seatwarden.toml",
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
         [workspace]\nurl = \"https://scim.example.com/scim/v2\"\n\
         token_file = \"workspace-token\"\n",
    );
    let check = |mode: u32| {
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"));
        command
            .args(["--config", config.to_str().unwrap(), "check-config"])
            .env_remove("SEATWARDEN_CONFIG");
        for (name, _) in std::env::vars() {
            if name.starts_with("SEATWARDEN__") {
                command.env_remove(name);
            }
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{mode:o}: {stderr}");
        assert!(!stderr.contains("very-secret-token"), "{stderr}");
        stderr
    };
    let stderr = check(0o644);
    assert!(
        stderr.contains("warning: workspace.token_file:")
            && stderr.contains(&token.display().to_string())
            && stderr.contains("mode 0644"),
        "{stderr}"
    );
    let stderr = check(0o600);
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(stderr.contains("configuration OK"), "{stderr}");
}

/// A relative path, in the file or a variable, is taken from the configuration
/// file's folder; `check-config` lists each path as it will be used, absolute
/// even when `--config` is relative, and names the variable that set one.
#[test]
fn check_config_lists_the_files_it_uses_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example/directory.json");
    std::fs::copy(&example, dir.path().join("directory.json")).unwrap();
    write(dir.path(), "seatwarden.toml", MINIMAL);
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"));
    command
        .current_dir(dir.path())
        .args(["--config", "seatwarden.toml", "check-config"])
        .env_remove("SEATWARDEN_CONFIG")
        .env("SEATWARDEN__STATE__PATH", "state/seatwarden.db");
    for (name, _) in std::env::vars() {
        if name.starts_with("SEATWARDEN_") && name != "SEATWARDEN__STATE__PATH" {
            command.env_remove(name);
        }
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let folder = std::path::absolute(dir.path()).unwrap();
    let line = |key: &str| {
        stderr
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("{key}: {stderr}"))
            .to_owned()
    };
    assert!(
        line("state.path").ends_with(&format!(
            " {} (from environment variable SEATWARDEN__STATE__PATH)",
            folder.join("state/seatwarden.db").display()
        )),
        "{stderr}"
    );
    assert!(
        line("directory.path").ends_with(&format!(" {}", folder.join("directory.json").display())),
        "{stderr}"
    );
}
