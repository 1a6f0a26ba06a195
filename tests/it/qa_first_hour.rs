//! An IT engineer's first hour: the mistakes people make writing their first
//! configuration by hand, each refused (or told) in words that name the key, the
//! file and the fix, before a run could act on it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use seatwarden::config::Config;

const DIRECTORY: &str = "[directory]\nkind = \"file\"\npath = \"directory.json\"\n";
const WORKSPACE: &str =
    "[workspace]\nurl = \"https://scim.example.com/scim/v2\"\ntoken = \"s3cr3t-token-value\"\n";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn load_in(dir: &Path, text: &str) -> Result<Config, String> {
    let path = write(dir, "seatwarden.toml", text);
    Config::load_with_env(&path, Some(HashMap::new())).map_err(|e| e.to_string())
}

fn load(text: &str) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    load_in(dir.path(), text)
}

#[test]
fn the_core_roles_attribute_written_in_full_is_refused_naming_roles() {
    // RFC 7643 lets an attribute be named by its full path; as an "extension" the
    // role would be read from an object nobody sends: every account, every Owner
    // included, would read as having no role.
    let error = load(&format!(
        "{DIRECTORY}{WORKSPACE}role_attribute = \
         \"urn:ietf:params:scim:schemas:core:2.0:User:roles\"\n"
    ))
    .unwrap_err();
    assert!(error.contains("key `workspace.role_attribute`"), "{error}");
    assert!(
        error.contains("write role_attribute = \"roles\""),
        "{error}"
    );

    let error = load(&format!(
        "{DIRECTORY}{WORKSPACE}role_attribute = \
         \"urn:ietf:params:scim:schemas:core:2.0:User:title\"\n"
    ))
    .unwrap_err();
    assert!(error.contains("not an extension"), "{error}");

    // A real extension attribute still loads.
    load(&format!(
        "{DIRECTORY}{WORKSPACE}role_attribute = \
         \"urn:ietf:params:scim:schemas:extension:taskade:2.0:User:role\"\n"
    ))
    .unwrap();
}

#[test]
fn a_workspace_token_pasted_with_its_scheme_or_a_second_line_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = write(dir.path(), "workspace-token", "Bearer 0123456789abcdef\n");
    let config = load_in(
        dir.path(),
        &format!(
            "{DIRECTORY}[workspace]\nurl = \"https://scim.example.com/scim/v2\"\n\
             token_file = \"workspace-token\"\n"
        ),
    )
    .unwrap();
    let error = config.workspace_token().unwrap_err().to_string();
    assert!(error.contains("key `workspace.token_file`"), "{error}");
    assert!(error.contains(&token_file.display().to_string()), "{error}");
    assert!(error.contains("scheme `Bearer`"), "{error}");
    assert!(
        !error.contains("0123456789abcdef"),
        "the token is never shown: {error}"
    );
    // check-config reads it as every run will.
    assert!(config.check_files().is_err());

    write(
        dir.path(),
        "workspace-token",
        "# rotated 2026-11-02\n0123456789abcdef\n",
    );
    let error = config.workspace_token().unwrap_err().to_string();
    assert!(error.contains("line break"), "{error}");
    assert!(
        !error.contains("rotated"),
        "the file's text is never shown: {error}"
    );

    write(dir.path(), "workspace-token", "0123456789abcdef\n");
    config.workspace_token().unwrap();

    let error = load(&format!(
        "{DIRECTORY}[workspace]\nurl = \"https://scim.example.com/scim/v2\"\n\
         token = \"bearer 0123456789abcdef\"\n"
    ))
    .unwrap()
    .workspace_token()
    .unwrap_err()
    .to_string();
    assert!(error.contains("key `workspace.token`"), "{error}");
}

fn okta(url: &str) -> Result<Config, String> {
    load(&format!(
        "[directory]\nkind = \"okta\"\nurl = \"{url}\"\ntoken = \"00abc\"\n{WORKSPACE}"
    ))
}

#[test]
fn an_okta_url_copied_with_its_api_path_or_from_the_admin_console_is_refused() {
    let error = okta("https://acme.okta.com/api/v1").unwrap_err();
    assert!(error.contains("key `directory.url`"), "{error}");
    assert!(error.contains("/api/v1"), "{error}");
    assert!(error.contains("\"https://acme.okta.com\""), "{error}");

    let error = okta("https://acme-admin.okta.com/admin/dashboard").unwrap_err();
    assert!(error.contains("Admin Console"), "{error}");
    assert!(error.contains("\"https://acme.okta.com\""), "{error}");
    let error = okta("https://acme-admin.oktapreview.com").unwrap_err();
    assert!(
        error.contains("\"https://acme.oktapreview.com\""),
        "{error}"
    );

    okta("https://acme.okta.com").unwrap();
    okta("https://acme.okta.com/").unwrap();
    // A custom domain, or an org whose own name ends in -admin elsewhere, is theirs.
    okta("https://login-admin.acme.com").unwrap();
}

#[test]
fn a_graph_url_copied_with_its_api_version_is_refused() {
    let entra = |graph: &str| {
        load(&format!(
            "[directory]\nkind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\n\
             client_secret = \"s\"\ngraph_url = \"{graph}\"\n{WORKSPACE}"
        ))
    };
    let error = entra("https://graph.microsoft.com/v1.0").unwrap_err();
    assert!(error.contains("key `directory.graph_url`"), "{error}");
    assert!(error.contains("/v1.0"), "{error}");
    entra("https://graph.microsoft.com/beta/").unwrap_err();
    entra("https://graph.microsoft.us").unwrap();
}

#[test]
fn a_config_path_naming_a_folder_says_so_rather_than_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let error = Config::load_with_env(dir.path(), Some(HashMap::new()))
        .unwrap_err()
        .to_string();
    assert!(!error.contains("not found"), "{error}");
    assert!(error.contains("is a folder"), "{error}");
    assert!(
        error.contains(&dir.path().join("seatwarden.toml").display().to_string()),
        "{error}"
    );

    let error = Config::load_with_env(&dir.path().join("seatwarden.toml"), Some(HashMap::new()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("not found"), "{error}");
}

#[test]
fn a_missing_key_in_a_mapping_and_a_missing_section_are_named_as_written() {
    let error = load(&format!(
        "{DIRECTORY}{WORKSPACE}[[policy.mapping]]\ngroup = \"Engineering\"\nrole = \"Editor\"\n"
    ))
    .unwrap_err();
    assert!(
        error.contains("key `policy.mapping[0].workspace_group`: missing"),
        "{error}"
    );

    let error = load(DIRECTORY).unwrap_err();
    assert!(error.contains("key `workspace`"), "{error}");
    assert!(error.contains("no [workspace] section"), "{error}");
}

fn check_config(dir: &Path, text: &str) -> (bool, String) {
    let config = write(dir, "seatwarden.toml", text);
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo/directory.json"),
        dir.join("directory.json"),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .env_remove("SEATWARDEN_CONFIG")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `check-config` shows the next fires "to check a cron expression against what
/// was meant"; without `[report.email]` the digest is never sent (the daemon logs
/// a warning at each fire), so its fires would promise mail that never comes.
#[test]
fn check_config_shows_the_digest_off_without_an_email_section() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stderr) = check_config(dir.path(), &format!("{DIRECTORY}{WORKSPACE}"));
    assert!(ok, "{stderr}");
    let digest = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("digest"))
        .unwrap_or_default();
    assert!(
        digest.contains("off: no [report.email]") && !digest.contains(" next "),
        "{stderr}"
    );

    let (ok, stderr) = check_config(
        dir.path(),
        &format!(
            "{DIRECTORY}{WORKSPACE}[report.email]\nsmtp_url = \"smtp://127.0.0.1:25\"\n\
             from = \"seatwarden@example.com\"\nto = [\"it@example.com\"]\n"
        ),
    );
    assert!(ok, "{stderr}");
    let digest = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("digest"))
        .unwrap_or_default();
    assert!(digest.contains(" next "), "{stderr}");
}

/// A first configuration maps an Owners group the export does not carry (here
/// "IT Admins", from the example, against the demo's directory): the warnings
/// that explain why Owner demotions and the group's removals are held name that
/// directory group, and the workspace group as the configuration spells it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_held_owner_and_group_warnings_name_the_groups_to_check() {
    let sandbox = crate::fixtures::demo_sandbox("t0ken", Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo/directory.json"),
        dir.path().join("directory.json"),
    )
    .unwrap();
    let config = write(
        dir.path(),
        "seatwarden.toml",
        &format!(
            "{DIRECTORY}[workspace]\nurl = \"{}\"\ntoken = \"t0ken\"\n\
             [policy]\nscope_groups = [\"Taskade Users\"]\n\
             [[policy.mapping]]\ngroup = \"IT Admins\"\nworkspace_group = \"Administration\"\n\
             role = \"Owner\"\n",
            sandbox.base_url()
        ),
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(&config)
            .arg("plan")
            .env_remove("SEATWARDEN_CONFIG")
            .env_remove("RUST_LOG")
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let owner = stderr
        .lines()
        .find(|l| l.contains("gives Owner"))
        .unwrap_or_default();
    assert!(owner.contains("groups=IT Admins"), "{stderr}");
    let group = stderr
        .lines()
        .find(|l| l.contains("names this workspace group"))
        .unwrap_or_default();
    assert!(group.contains("group=Administration"), "{stderr}");
    assert!(group.contains("directory_groups=IT Admins"), "{stderr}");
}

/// serde's words for types ("64-bit integer", "a sequence", "a floating point")
/// are not the file's: a mistyped value is said as the file spells values.
#[test]
fn a_mistyped_value_is_said_in_the_words_of_the_file() {
    let cases = [
        (
            "[safety]\nmax_deprovisions = -5\n",
            "key `safety.max_deprovisions`: expected a whole number, 0 or more, found the number -5",
        ),
        (
            "[safety]\nmax_deprovision_percent = \"5%\"\n",
            "key `safety.max_deprovision_percent`: expected a number from 0 to 100, such as 5 or 2.5, \
             found the text \"5%\"",
        ),
        (
            "[policy]\nscope_groups = \"Taskade Users\"\n",
            "key `policy.scope_groups`: expected a list, such as [\"a\", \"b\"], found the text \"Taskade Users\"",
        ),
        (
            "[deprovision]\nsla = [\"1h\"]\n",
            "key `deprovision.sla`: expected text in quotes, found a list",
        ),
    ];
    for (section, expected) in cases {
        let error = load(&format!("{DIRECTORY}{WORKSPACE}{section}")).unwrap_err();
        assert!(error.ends_with(expected), "{section}: {error}");
    }
}

#[test]
fn a_variable_for_the_mapping_tables_is_refused_as_file_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "seatwarden.toml",
        &format!("{DIRECTORY}{WORKSPACE}"),
    );
    let env = HashMap::from([("SEATWARDEN__POLICY__MAPPING".to_owned(), "x".to_owned())]);
    let error = Config::load_with_env(&path, Some(env))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("environment variable SEATWARDEN__POLICY__MAPPING"),
        "{error}"
    );
    assert!(error.contains("read from the file only"), "{error}");
}

fn workspace_url(url: &str) -> Result<Config, String> {
    load(&format!(
        "{DIRECTORY}[workspace]\nurl = \"{url}\"\ntoken = \"s3cr3t-token-value\"\n"
    ))
}

/// `check-config` passed these, and the first run failed: a query with "SCIM
/// client settings: base URL must not have a query", naming neither the key nor
/// the file; an endpoint after the version with a 404 on `…/Users/Users`.
#[test]
fn a_workspace_url_with_an_endpoint_or_a_query_is_refused_at_load() {
    let error = workspace_url("https://www.taskade.com/scim/v2/Users").unwrap_err();
    assert!(error.contains("key `workspace.url`"), "{error}");
    assert!(error.contains("ends in the endpoint /Users"), "{error}");
    assert!(
        error.contains("such as \"https://www.taskade.com/scim/v2\""),
        "{error}"
    );
    let error = workspace_url("https://scim.example.com/scim/v2/groups/").unwrap_err();
    assert!(error.contains("/Groups"), "{error}");

    let error = workspace_url("https://scim.example.com/scim/v2?tenant=acme").unwrap_err();
    assert!(error.contains("key `workspace.url`"), "{error}");
    assert!(error.contains("query"), "{error}");

    workspace_url("https://scim.example.com/scim/v2").unwrap();
    workspace_url("https://scim.example.com/scim/v2/").unwrap();
    // A tenant's path before the version is theirs.
    workspace_url("https://scim.example.com/tenants/users-team/scim/v2").unwrap();
}

/// A domain name where the LDAP search base goes passed `check-config` and was
/// refused by the server at the first run.
#[test]
fn an_ldap_search_base_written_as_a_domain_name_is_refused_with_its_dn() {
    let ldap = |bases: &str| {
        load(&format!(
            "[directory]\nkind = \"ldap\"\nurl = \"ldaps://dc1.corp.example.com\"\n\
             bind_dn = \"svc-seatwarden@corp.example.com\"\nbind_password = \"pw\"\n{bases}\
             {WORKSPACE}"
        ))
    };
    let error = ldap("base_dn = \"corp.example.com\"\n").unwrap_err();
    assert!(error.contains("key `directory.base_dn`"), "{error}");
    assert!(error.contains("\"DC=corp,DC=example,DC=com\""), "{error}");
    let error =
        ldap("base_dn = \"DC=corp,DC=example,DC=com\"\ngroup_base_dn = \"Groups\"\n").unwrap_err();
    assert!(error.contains("key `directory.group_base_dn`"), "{error}");
    // A UPN bind DN is Active Directory's own, and loads.
    ldap("base_dn = \"OU=Staff,DC=corp,DC=example,DC=com\"\n").unwrap();
}

/// An override naming no key is said like every other key error: the variable,
/// then the key it spells, then what is accepted there.
#[test]
fn a_misspelt_override_names_the_key_it_spells() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "seatwarden.toml",
        &format!("{DIRECTORY}{WORKSPACE}"),
    );
    let env = HashMap::from([(
        "SEATWARDEN__WORKSPACE__PAGESIZE".to_owned(),
        "50".to_owned(),
    )]);
    let error = Config::load_with_env(&path, Some(env))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(
            "environment variable SEATWARDEN__WORKSPACE__PAGESIZE: key `workspace.pagesize`: \
             unknown field `pagesize`"
        ),
        "{error}"
    );
    assert!(error.contains("`page_size`"), "{error}");
}

/// A TOML syntax error names the file once, before the excerpt that points at
/// the mistake, and does not end with it again.
#[test]
fn a_syntax_error_names_the_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "seatwarden.toml", "[workspace\nurl = 1\n");
    let error = Config::load_with_env(&path, Some(HashMap::new()))
        .unwrap_err()
        .to_string();
    let file = path.display().to_string();
    assert!(
        error.starts_with(&format!("{file}: TOML parse error")),
        "{error}"
    );
    assert_eq!(error.matches(&file).count(), 1, "{error}");
    assert!(error.ends_with("unclosed table, expected `]`"), "{error}");
}

/// The Okta org URL copied without its scheme, as the admin console shows it.
#[test]
fn a_directory_url_without_its_scheme_says_how_to_write_it() {
    let error = okta("acme.okta.com").unwrap_err();
    assert!(
        error.ends_with(
            "key `directory.url`: not a URL: \"acme.okta.com\" has no scheme; write it in full, \
             such as \"https://acme.okta.com\""
        ),
        "{error}"
    );
}

/// An Okta API token copied with Okta's `SSWS` scheme (as the Admin Console's
/// examples write the header) would be sent as `SSWS SSWS …` and refused as if
/// revoked: refused at load inline, and by check-config (and every run) from
/// its file, naming the key and never the token.
#[test]
fn a_directory_token_pasted_with_its_scheme_is_refused_naming_the_key() {
    let error = load(&format!(
        "[directory]\nkind = \"okta\"\nurl = \"https://acme.okta.com\"\n\
         token = \"SSWS 00abcdef\"\n{WORKSPACE}"
    ))
    .unwrap_err();
    assert!(error.contains("key `directory.token`"), "{error}");
    assert!(error.contains("scheme `SSWS`"), "{error}");
    assert!(!error.contains("00abcdef"), "{error}");

    let dir = tempfile::tempdir().unwrap();
    let token_file = write(dir.path(), "okta-token", "SSWS 00abcdef\n");
    let config = load_in(
        dir.path(),
        &format!(
            "[directory]\nkind = \"okta\"\nurl = \"https://acme.okta.com\"\n\
             token_file = \"okta-token\"\n{WORKSPACE}"
        ),
    )
    .unwrap();
    let error = config.check_files().unwrap_err().to_string();
    assert!(error.contains("directory.token_file"), "{error}");
    assert!(error.contains(&token_file.display().to_string()), "{error}");
    assert!(error.contains("scheme `SSWS`"), "{error}");
    assert!(!error.contains("00abcdef"), "{error}");

    write(dir.path(), "okta-token", "00abcdef\n");
    config.check_files().unwrap();
}
