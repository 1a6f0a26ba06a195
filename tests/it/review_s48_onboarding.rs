//! An IT engineer's first day with the binary: `check-config` blames a value a
//! `SEATWARDEN__…` variable set on that variable, not on a file that does not
//! hold it (a directory secret file that is empty, a scope group the export
//! lacks), tells `[policy.mapping]` to double its brackets and `[[workspace]]`
//! to single them;
//! `check-config --connect` names what a run would refuse in the workspace's
//! answers (a User the run cannot read, a ServiceProviderConfig that is not
//! JSON) instead of passing it as `ok`; `seatwarden --help`'s exit codes name
//! the commands README's table names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The `error:` line of `stderr`.
fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"))
}

/// An owner-only secret file `name` in `dir` holding `text`.
fn secret(dir: &Path, name: &str, text: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    file.display().to_string()
}

/// A directory secret file set by a variable, empty: the error names the
/// variable (as for the workspace's token file), not the configuration file,
/// which names another, good file.
#[test]
fn an_empty_directory_secret_file_set_by_a_variable_is_blamed_on_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let good = secret(dir.path(), "directory-token", "idp-token");
    let empty = secret(dir.path(), "empty-token", "");
    secret(dir.path(), "workspace-token", "ws-token");
    std::fs::write(
        dir.path().join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"scim\"\nurl = \"https://idp.example.com/scim/v2\"\n\
             token_file = \"{good}\"\n\
             [workspace]\nurl = \"https://ws.example.com/scim/v2\"\n\
             token_file = \"workspace-token\"\n[state]\npath = \"state.db\"\n"
        ),
    )
    .unwrap();
    let (code, stderr) = crate::fixtures::seatwarden_in(dir.path(), &[], &["check-config"]);
    assert_eq!(code, Some(0), "{stderr}");

    let (code, stderr) = crate::fixtures::seatwarden_in(
        dir.path(),
        &env(&[("SEATWARDEN__DIRECTORY__TOKEN_FILE", &empty)]),
        &["check-config"],
    );
    assert_eq!(code, Some(1), "{stderr}");
    let error = error_line(&stderr);
    assert!(
        error.starts_with("error: environment variable SEATWARDEN__DIRECTORY__TOKEN_FILE: ")
            && error.contains("directory.token_file")
            && error.contains("is empty"),
        "{error}"
    );
}

/// A scope group the export does not carry, set by a variable: the error names
/// the variable; the same typo in the file still names the file.
#[test]
fn a_scope_group_set_by_a_variable_that_no_row_carries_is_blamed_on_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    crate::fixtures::copy_demo_files(dir.path());
    let (code, stderr) = crate::fixtures::seatwarden_in(
        dir.path(),
        &env(&[("SEATWARDEN__POLICY__SCOPE_GROUPS", "Taskade Userz")]),
        &["check-config"],
    );
    assert_eq!(code, Some(1), "{stderr}");
    let error = error_line(&stderr);
    assert!(
        error.starts_with("error: environment variable SEATWARDEN__POLICY__SCOPE_GROUPS: ")
            && error.contains("\"Taskade Userz\"")
            && error.contains("policy.scope_groups"),
        "{error}"
    );

    let toml = dir.path().join("seatwarden.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let typo = text.replace(
        "scope_groups = [\"Taskade Users\"]",
        "scope_groups = [\"Taskade Userz\"]",
    );
    assert_ne!(typo, text, "the demo's configuration moved");
    std::fs::write(&toml, typo).unwrap();
    let (code, stderr) = crate::fixtures::seatwarden_in(dir.path(), &[], &["check-config"]);
    assert_eq!(code, Some(1), "{stderr}");
    let error = error_line(&stderr);
    assert!(
        error.starts_with(&format!("error: {}: ", toml.display()))
            && error.contains("policy.scope_groups"),
        "{error}"
    );
}

/// The demo's configuration and directory in a new folder, its workspace the
/// server at `url` (token `demo-token`).
fn demo_config_for(url: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    crate::fixtures::copy_demo_files(dir.path());
    let toml = dir.path().join("seatwarden.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let pointed = text.replace(
        "url = \"http://127.0.0.1:0/scim/v2\"",
        &format!("url = \"{url}/scim/v2\""),
    );
    assert_ne!(pointed, text, "the demo's configuration moved");
    std::fs::write(&toml, pointed).unwrap();
    dir
}

fn list(resources: serde_json::Value) -> ResponseTemplate {
    let total = resources.as_array().map_or(0, Vec::len);
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": total,
        "startIndex": 1,
        "itemsPerPage": total,
        "Resources": resources,
    }))
}

async fn workspace_answering(
    service_provider_config: ResponseTemplate,
    users: ResponseTemplate,
) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/ServiceProviderConfig"))
        .respond_with(service_provider_config)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(users)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(list(serde_json::json!([
            {"id": "g1", "displayName": "Engineering", "members": []}
        ])))
        .mount(&server)
        .await;
    server
}

/// The binary with `args` on `dir`'s configuration, off the runtime the mock
/// server answers on.
async fn binary(dir: &Path, args: &'static [&'static str]) -> (Option<i32>, String) {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || crate::fixtures::seatwarden_in(&dir, &[], args))
        .await
        .unwrap()
}

fn workspace_line(stderr: &str) -> &str {
    stderr
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with("workspace "))
        .unwrap_or_else(|| panic!("no workspace line: {stderr}"))
}

/// A User without id on the first page of `/Users`: a run refuses the listing,
/// so the check does too, naming the request and what was wrong, where it
/// used to pass it as `ok` and leave the engineer to meet it at `plan`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_a_run_cannot_read_fails_the_connect_check_naming_the_request() {
    let server = workspace_answering(
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": true},
        })),
        list(serde_json::json!([{"userName": "ada@example.com", "active": true}])),
    )
    .await;
    let dir = demo_config_for(&server.uri());

    let (code, stderr) = binary(dir.path(), &["check-config", "--connect"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    let line = workspace_line(&stderr);
    assert!(
        line.contains("FAILED")
            && line.contains("GET /Users?")
            && line.contains("malformed response: User without id"),
        "{line}"
    );
    // The run meets the same answer the same way.
    let (code, stderr) = binary(dir.path(), &["plan"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        error_line(&stderr).contains("GET /Users?")
            && error_line(&stderr).contains("User without id"),
        "{stderr}"
    );
}

/// A `/ServiceProviderConfig` that is not JSON is tolerated, as a run tolerates
/// it, but the check says it was not usable and why (the request and the
/// parse error), not "PATCH not said, …" as if the provider had said nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_service_provider_config_is_said_with_why() {
    let server = workspace_answering(
        ResponseTemplate::new(200)
            .insert_header("Content-Type", "application/scim+json")
            .set_body_string("{\"patch\": {\"supported\": tru"),
        list(serde_json::json!([{
            "id": "u1", "userName": "ada@example.com", "active": true
        }])),
    )
    .await;
    let dir = demo_config_for(&server.uri());

    let (code, stderr) = binary(dir.path(), &["check-config", "--connect"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let line = workspace_line(&stderr);
    assert!(
        line.contains(" ok ")
            && line.contains("no usable ServiceProviderConfig, defaults apply")
            && line.contains("GET /ServiceProviderConfig: malformed response: body is not JSON")
            && line.contains("GET /Users (1 accounts)")
            && !line.contains("not said"),
        "{line}"
    );
}

/// `seatwarden --help`'s exit codes name the commands README's table names for
/// them: `resume` exits 3 when its reconcile holds actions (its own `--help`
/// says so), a throttled `check-config --connect` and an unwritten `backup`
/// exit 1.
#[test]
fn the_top_level_helps_exit_codes_name_the_commands_readme_names() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    let codes = help
        .split("Exit codes:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap_or_else(|| panic!("no exit codes: {help}"));
    // Each entry: its code, then its text over the lines up to the next code.
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in codes.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some(code)
                if code.parse::<u8>().is_ok() && line.len() - line.trim_start().len() < 3 =>
            {
                entries.push((code.to_owned(), words.collect::<Vec<_>>().join(" ")));
            }
            _ => {
                let (_, text) = entries.last_mut().unwrap();
                text.push(' ');
                text.push_str(line.trim());
            }
        }
    }
    let entry = |code: &str| {
        entries
            .iter()
            .find(|(c, _)| c == code)
            .map(|(_, text)| text.as_str())
            .unwrap_or_else(|| panic!("no exit code {code}: {codes}"))
    };
    assert!(entry("3").contains("resume"), "{}", entry("3"));
    assert!(
        entry("1").contains("backup") && entry("1").contains("throttled"),
        "{}",
        entry("1")
    );
}

/// `[policy.mapping]` written for `[[policy.mapping]]` (one table where a list of
/// tables is): the error says to double the brackets, not to write a list
/// `["a", "b"]`, which the mapping cannot be.
#[test]
fn a_mapping_headed_with_single_brackets_is_told_to_double_them() {
    let dir = tempfile::tempdir().unwrap();
    crate::fixtures::copy_demo_files(dir.path());
    let toml = dir.path().join("seatwarden.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    // The demo's first mapping with single brackets, the others dropped (TOML
    // refuses a table and a list of tables under one name).
    let first = text.find("[[policy.mapping]]").unwrap();
    let end = text[first..].find("\n[deprovision]").unwrap() + first;
    let mapping = &text[first..end];
    let one = mapping
        .split("[[policy.mapping]]")
        .nth(1)
        .unwrap()
        .to_owned();
    let single = format!("{}[policy.mapping]{one}{}", &text[..first], &text[end..]);
    std::fs::write(&toml, single).unwrap();

    let (code, stderr) = crate::fixtures::seatwarden_in(dir.path(), &[], &["check-config"]);
    assert_eq!(code, Some(1), "{stderr}");
    let error = error_line(&stderr);
    assert!(
        error.contains("key `policy.mapping`")
            && error.contains("[[policy.mapping]], with double brackets")
            && !error.contains("such as [\"a\", \"b\"]"),
        "{error}"
    );
}

/// A section headed with double brackets (`[[workspace]]`, as the file's
/// `[[policy.mapping]]` are): serde read it as a list of the section's fields
/// and blamed `workspace[0]` for not being text; the error names the section
/// and the single brackets it needs. A list of text given a table still reads
/// as before.
#[test]
fn a_section_headed_with_double_brackets_is_told_to_use_single_ones() {
    let dir = tempfile::tempdir().unwrap();
    crate::fixtures::copy_demo_files(dir.path());
    let toml = dir.path().join("seatwarden.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let doubled = text.replace("\n[workspace]\n", "\n[[workspace]]\n");
    assert_ne!(doubled, text, "the demo's configuration moved");
    std::fs::write(&toml, doubled).unwrap();
    let (code, stderr) = crate::fixtures::seatwarden_in(dir.path(), &[], &["check-config"]);
    assert_eq!(code, Some(1), "{stderr}");
    let error = error_line(&stderr);
    assert!(
        error.contains("key `workspace`: ")
            && error.contains("headed [workspace] with single brackets")
            && !error.contains("workspace[0]"),
        "{error}"
    );

    let listed = text.replace(
        "scope_groups = [\"Taskade Users\"]",
        "scope_groups = [{ name = \"Taskade Users\" }]",
    );
    assert_ne!(listed, text, "the demo's configuration moved");
    std::fs::write(&toml, listed).unwrap();
    let (code, stderr) = crate::fixtures::seatwarden_in(dir.path(), &[], &["check-config"]);
    assert_eq!(code, Some(1), "{stderr}");
    let error = error_line(&stderr);
    assert!(
        error.contains("key `policy.scope_groups[0]`: expected text in quotes"),
        "{error}"
    );
}
