//! An IT engineer's first day with the binary: `check-config` blames a value a
//! `SEATWARDEN__…` variable set on that variable, not on a file that does not
//! hold it (a directory secret file that is empty, a scope group the export
//! lacks), and `check-config --connect` names what a run would refuse in the
//! workspace's answers (a User the run cannot read, a ServiceProviderConfig
//! that is not JSON) instead of passing it as `ok`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

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
