//! Session 40 review: secrets and what leaves the process (help text, exports,
//! errors).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// `seatwarden ARGS` with `env` (nothing from the test's own `SEATWARDEN_…`
/// variables): exit code, stdout, stderr.
fn seatwarden(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(args)
        .env_remove("SEATWARDEN_CONFIG")
        .env_remove("SEATWARDEN_SANDBOX_TOKEN")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// clap prints an option's variable with its value in `--help`: the sandbox's
/// bearer token (which guards a copy of a workspace) must not be shown so.
#[test]
fn sandbox_help_names_the_token_variable_but_not_its_value() {
    let (code, help, _) = seatwarden(
        &["sandbox", "--help"],
        &[("SEATWARDEN_SANDBOX_TOKEN", "s3cr3t-sandbox-t0ken")],
    );
    assert_eq!(code, Some(0));
    assert!(help.contains("SEATWARDEN_SANDBOX_TOKEN"), "{help}");
    assert!(!help.contains("s3cr3t-sandbox-t0ken"), "{help}");
}
