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

/// A private key seatwarden cannot use (encrypted with a passphrase, here)
/// fails `check-config` naming the key, its file and why, for Okta's service app
/// and Entra's certificate alike.
#[cfg(unix)]
#[test]
fn an_unusable_private_key_names_its_file_and_why() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("directory-key.pem");
    std::fs::write(
        &key,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHzBJBgkqhkiG9w0BBQ0wPDAbBgkqhkiG9w0BBQwwDgQI\n\
         -----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(dir.path().join("token"), "t0ken\n").unwrap();
    let certificate =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys/test-cert.pem");
    for directory in [
        "kind = \"okta\"\nurl = \"https://acme.okta.com\"\nclient_id = \"0oa1\"\n\
         private_key_file = \"directory-key.pem\"\n"
            .to_owned(),
        format!(
            "kind = \"entra\"\ntenant_id = \"t1\"\nclient_id = \"c1\"\n\
             certificate_file = \"{}\"\nprivate_key_file = \"directory-key.pem\"\n",
            certificate.display()
        ),
    ] {
        std::fs::write(
            dir.path().join("seatwarden.toml"),
            format!(
                "[directory]\n{directory}\n[workspace]\nurl = \"https://scim.example.com/scim/v2\"\n\
                 token_file = \"token\"\n"
            ),
        )
        .unwrap();
        let config = seatwarden::config::Config::load_with_env(
            &dir.path().join("seatwarden.toml"),
            Some(Default::default()),
        )
        .unwrap();
        let error = config.check_files().unwrap_err().to_string();
        assert!(
            error.contains(&format!("directory.private_key_file {}", key.display())),
            "{error}"
        );
        assert!(error.contains("encrypted with a passphrase"), "{error}");
    }
}
