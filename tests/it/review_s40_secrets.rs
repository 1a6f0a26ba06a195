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

/// `export access > review.csv` under a shell's umask 022: the file the shell
/// made for stdout is readable by every user, and the export (every account's
/// name, address, role and groups) is taken from others before it is written;
/// its group keeps what it had. The same for `export workspace`.
#[cfg(unix)]
#[tokio::test]
async fn an_export_written_to_a_file_others_can_read_is_kept_from_them() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    seatwarden::demo::run(dir.path(), false).await.unwrap();
    let config = dir.path().join("seatwarden.toml");
    for (kind, name) in [("access", "review.csv"), ("workspace", "seed.json")] {
        let path = dir.path().join(name);
        let file = std::fs::File::create(&path).unwrap();
        file.set_permissions(std::fs::Permissions::from_mode(0o664))
            .unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(&config)
            .args(["export", kind])
            .env_remove("SEATWARDEN_CONFIG")
            .stdout(file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660, "{kind}: {stderr}");
        assert!(stderr.contains("now mode 0660"), "{stderr}");
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(written.contains("liam.kowalski@example.com"), "{kind}");
    }
    // A pipe is left alone, and nothing is said about it.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(&config)
        .args(["export", "access"])
        .env_remove("SEATWARDEN_CONFIG")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("personal data"),
        "{output:?}"
    );
}
