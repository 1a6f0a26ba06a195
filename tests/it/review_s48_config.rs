//! Configuration nits, through the binary on the demo's configuration: a
//! schedule that fires more than once a minute (six fields, seconds first:
//! `*/5 * * * * *` reconciles every 5 seconds) is warned about by
//! `check-config`; the `--connect` header says `once`, not `1 times`; a
//! `SEATWARDEN__WORKSPACE__ROLE_ATTRIBUTE=groups` with no role group in the file
//! is blamed on that variable, not on the file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The demo's configuration in `dir`, with `extra` appended (a section).
fn demo_with(dir: &Path, extra: &str) {
    crate::fixtures::copy_demo_files(dir);
    let toml = dir.join("seatwarden.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    assert!(
        !text.contains("[schedule]"),
        "the demo's configuration moved"
    );
    text.push_str(extra);
    std::fs::write(&toml, text).unwrap();
}

fn check_config(dir: &Path, env: &[(String, String)], args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["check-config"];
    all.extend(args);
    crate::fixtures::seatwarden_in(dir, env, &all)
}

/// Six fields with a seconds field of several values fire several times a
/// minute: each such job is warned about, naming the key, how often, and the
/// five-field form; a seconds field of one value (once a minute) and the
/// defaults are not. The configuration stays valid (exit 0).
#[test]
fn a_schedule_that_fires_more_than_once_a_minute_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    demo_with(
        dir.path(),
        "\n[schedule]\nreconcile = \"*/5 * * * * *\"\nsweep = \"0,30 * * * * *\"\n",
    );
    let (code, stderr) = check_config(dir.path(), &[], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("times a minute"))
        .collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0].starts_with(
            "warning: schedule.reconcile: \"*/5 * * * * *\" fires 12 times a minute, a full run"
        ) && warnings[0].contains("with 6 fields the first is the seconds")
            && warnings[0].contains("\"*/5 * * * *\" is every 5 minutes"),
        "{stderr}"
    );
    assert!(
        warnings[1]
            .starts_with("warning: schedule.sweep: \"0,30 * * * * *\" fires 2 times a minute"),
        "{stderr}"
    );

    for quiet in ["", "\n[schedule]\nreconcile = \"30 */5 * * * *\"\n"] {
        let dir = tempfile::tempdir().unwrap();
        demo_with(dir.path(), quiet);
        let (code, stderr) = check_config(dir.path(), &[], &[]);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(!stderr.contains("times a minute"), "{quiet}: {stderr}");
    }
}

/// `workspace.retries = 1`: the daemon retries a workspace request once, in
/// the header and on the line of the workspace, which fails to connect.
#[test]
fn the_connect_header_says_once_for_one_retry() {
    let dir = tempfile::tempdir().unwrap();
    crate::fixtures::copy_demo_files(dir.path());
    let toml = dir.path().join("seatwarden.toml");
    let text = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("[workspace]\n", "[workspace]\nretries = 1\n");
    std::fs::write(&toml, text).unwrap();
    let (_, stderr) = check_config(dir.path(), &[], &["--connect"]);
    assert!(
        stderr.contains("no retries: the daemon retries a workspace request once):"),
        "{stderr}"
    );
    assert!(
        stderr.contains("(tried once, no retries; the daemon retries once)"),
        "{stderr}"
    );
    assert!(!stderr.contains("1 times"), "{stderr}");
}

/// The `error:` line of `stderr`.
fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"))
}

/// `role_attribute = "groups"` from a variable, no role group anywhere: the
/// missing group is the variable's doing, and the error names it. The same
/// value in the file names the file; a default role set by a variable that the
/// file's role groups lack names that variable (without it, the mapping that
/// needs the same group is the file's).
#[test]
fn role_groups_missing_for_a_variables_role_attribute_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    demo_with(dir.path(), "");
    let (code, stderr) = check_config(
        dir.path(),
        &env(&[("SEATWARDEN__WORKSPACE__ROLE_ATTRIBUTE", "groups")]),
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    let error = error_line(&stderr);
    assert!(
        error.starts_with(
            "error: environment variable SEATWARDEN__WORKSPACE__ROLE_ATTRIBUTE: key \
             `workspace.role_groups`: no group for role Viewer"
        ),
        "{error}"
    );

    let dir = tempfile::tempdir().unwrap();
    crate::fixtures::copy_demo_files(dir.path());
    let toml = dir.path().join("seatwarden.toml");
    let text = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("role_attribute = \"roles\"", "role_attribute = \"groups\"");
    std::fs::write(&toml, &text).unwrap();
    let (code, stderr) = check_config(dir.path(), &[], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    let error = error_line(&stderr);
    assert!(
        error.contains("seatwarden.toml: key `workspace.role_groups`: no group for role Viewer"),
        "{error}"
    );

    let groups: String = [
        "Owner",
        "Maintainer",
        "Editor",
        "Commenter",
        "Collaborator",
        "Participant",
        "Viewer",
    ]
    .iter()
    .map(|role| format!("{role} = \"Taskade {role}s\"\n"))
    .collect();
    std::fs::write(
        &toml,
        text.replace(
            "[policy]\n",
            &format!("[workspace.role_groups]\n{groups}\n[policy]\n"),
        )
        .replace("Editor = \"Taskade Editors\"\n", ""),
    )
    .unwrap();
    let (code, stderr) = check_config(dir.path(), &[], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    let error = error_line(&stderr);
    assert!(
        error.contains(
            "seatwarden.toml: key `workspace.role_groups`: no group for role Editor, which \
             policy.mapping[2] gives"
        ),
        "{error}"
    );
    let (code, stderr) = check_config(
        dir.path(),
        &env(&[("SEATWARDEN__POLICY__DEFAULT_ROLE", "Editor")]),
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    let error = error_line(&stderr);
    assert!(
        error.starts_with(
            "error: environment variable SEATWARDEN__POLICY__DEFAULT_ROLE: key \
             `workspace.role_groups`: no group for role Editor, policy.default_role"
        ),
        "{error}"
    );
}
