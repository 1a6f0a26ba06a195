//! The packaging files against the manifest: what no Docker engine here can build
//! is at least kept in step with `Cargo.toml` by reading.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

/// The names of the `[[kind]]` targets `Cargo.toml` declares.
fn targets(manifest: &str, kind: &str) -> Vec<String> {
    let header = format!("[[{kind}]]");
    let mut names = Vec::new();
    let mut inside = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == header;
        } else if inside && let Some(value) = line.strip_prefix("name") {
            let name = value.trim_start().trim_start_matches('=').trim();
            names.push(name.trim_matches('"').to_owned());
        }
    }
    names
}

/// The Dockerfile's dependency layer builds with stubs for every target; a target
/// the manifest names and the stubs lack fails the first `cargo build` of the image.
#[test]
fn the_dockerfile_stubs_every_target_the_manifest_declares() {
    let manifest = read("Cargo.toml");
    let dockerfile = read("Dockerfile");
    let benches = targets(&manifest, "bench");
    assert!(benches.contains(&"e2e".to_owned()), "{benches:?}");
    for bench in benches {
        assert!(
            dockerfile.contains(&format!("> benches/{bench}.rs")),
            "the Dockerfile has no stub for bench {bench}"
        );
    }
    for test in targets(&manifest, "test") {
        assert!(
            dockerfile.contains(&format!("tests/{test}/main.rs")),
            "the Dockerfile has no stub for test {test}"
        );
    }
    assert!(dockerfile.contains("src/main.rs") && dockerfile.contains("src/lib.rs"));
}

/// Stand-ins for what `seatwarden-admin` calls, so it runs without systemd: `id`
/// says root, `systemctl cat` prints `$UNIT_TEXT`'s file, and `systemd-run` writes
/// its arguments, one a line, to `$ARGS`.
#[cfg(unix)]
fn admin_stubs(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    for (name, body) in [
        ("id", "echo 0\n"),
        (
            "systemctl",
            "[ \"$1 $3\" = \"cat seatwarden.service\" ] || exit 1\ncat \"$UNIT_TEXT\"\n",
        ),
        ("systemd-run", "printf '%s\\n' \"$@\" > \"$ARGS\"\n"),
    ] {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Runs `seatwarden-admin check-config` with `config` and the unit text; returns
/// systemd-run's arguments, the transient unit's name and the helper's stderr.
#[cfg(unix)]
fn run_admin(dir: &Path, unit_text: &str, config: &Path) -> (Vec<String>, String, String) {
    let bin = dir.join("bin");
    let unit = dir.join("seatwarden.service");
    std::fs::write(&unit, unit_text).unwrap();
    let args = dir.join("args");
    let _ = std::fs::remove_file(&args);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("sh")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/seatwarden-admin"))
        .arg("check-config")
        .env("PATH", path)
        .env("UNIT_TEXT", &unit)
        .env("ARGS", &args)
        .env("SEATWARDEN_CONFIG", config)
        .env_remove("SUDO_USER")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "seatwarden-admin failed: {stderr}");
    let args: Vec<String> = std::fs::read_to_string(&args)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let name = args
        .iter()
        .find_map(|a| a.strip_prefix("--unit="))
        .expect("a --unit= argument")
        .to_owned();
    (args, name, stderr)
}

/// The helper loads every credential the service's unit (and its drop-ins) loads,
/// and points each configuration key naming one at its own credentials
/// directory: the directory, SMTP and trigger secrets too, not only the
/// workspace token.
#[cfg(unix)]
#[test]
fn the_admin_helper_loads_every_credential_the_unit_loads_and_redirects_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    admin_stubs(dir.path());
    let shipped = read("systemd/seatwarden.service");
    let all = shipped.replace("#LoadCredential=", "LoadCredential=");
    let loaded: Vec<&str> = all
        .lines()
        .filter_map(|l| l.strip_prefix("LoadCredential="))
        .collect();
    assert_eq!(loaded.len(), 7, "{loaded:?}");
    let config = |name: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(name)
    };
    let extra = dir.path().join("email-and-trigger.toml");
    std::fs::write(
        &extra,
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
         [workspace]\nurl = \"https://x.example/scim/v2\"\n\
         token_file = '/run/credentials/seatwarden.service/workspace-token'\n\
         [[policy.mapping]]\ngroup = \"A\"\nworkspace_group = \"A\"\nrole = \"Owner\"\n\
         [http]\ntrigger_token_file = \"/run/credentials/seatwarden.service/trigger-token\"\n\
         [report.email]\nsmtp_url = \"smtp://127.0.0.1:25\"\nfrom = \"a@example.com\"\n\
         to = [\"b@example.com\"]\n\
         password_file = \"/run/credentials/seatwarden.service/smtp-password\"\n",
    )
    .unwrap();
    for (file, keys) in [
        (
            config("okta.example.toml"),
            vec![("DIRECTORY__TOKEN_FILE", "directory-token")],
        ),
        (
            config("entra.example.toml"),
            vec![("DIRECTORY__CLIENT_SECRET_FILE", "directory-token")],
        ),
        (
            config("ldap.example.toml"),
            vec![("DIRECTORY__BIND_PASSWORD_FILE", "ldap-password")],
        ),
        (
            config("scim.example.toml"),
            vec![("DIRECTORY__TOKEN_FILE", "directory-token")],
        ),
        (
            extra.clone(),
            vec![
                ("HTTP__TRIGGER_TOKEN_FILE", "trigger-token"),
                ("REPORT__EMAIL__PASSWORD_FILE", "smtp-password"),
            ],
        ),
    ] {
        let (args, unit, stderr) = run_admin(dir.path(), &all, &file);
        assert_eq!(stderr, "", "{}", file.display());
        for credential in &loaded {
            assert!(
                args.contains(&format!("--property=LoadCredential={credential}")),
                "{}: {credential} not loaded: {args:?}",
                file.display()
            );
        }
        let setenv: Vec<&String> = args
            .iter()
            .filter(|a| a.starts_with("--setenv=SEATWARDEN__"))
            .collect();
        assert_eq!(
            setenv.len(),
            keys.len() + 1,
            "{}: {setenv:?}",
            file.display()
        );
        for (key, id) in keys
            .into_iter()
            .chain([("WORKSPACE__TOKEN_FILE", "workspace-token")])
        {
            let expected =
                format!("--setenv=SEATWARDEN__{key}=/run/credentials/{unit}.service/{id}");
            assert!(
                args.contains(&expected),
                "{}: no {expected}: {args:?}",
                file.display()
            );
        }
        assert_eq!(
            args[args.len() - 2..],
            ["/usr/local/bin/seatwarden", "check-config"]
        );
    }

    // The shipped unit loads the workspace token alone: a configuration naming the
    // directory token is left pointing where the service would look, with a warning.
    let (args, _, stderr) = run_admin(dir.path(), &shipped, &config("okta.example.toml"));
    assert!(
        stderr.contains("names credential directory-token") && stderr.contains("does not load"),
        "{stderr}"
    );
    assert!(!args.iter().any(|a| a.contains("DIRECTORY__")), "{args:?}");
    assert!(
        args.iter()
            .any(|a| a.starts_with("--setenv=SEATWARDEN__WORKSPACE__TOKEN_FILE="))
    );

    // A drop-in's empty assignment resets the list; a later line for an ID wins.
    let dropin = format!(
        "{all}\n# /etc/systemd/system/seatwarden.service.d/creds.conf\n[Service]\n\
         LoadCredential=\nLoadCredentialEncrypted=workspace-token:/etc/seatwarden/workspace-token.cred\n\
         LoadCredential=directory-token:/etc/seatwarden/old\n\
         LoadCredential=directory-token:/etc/seatwarden/directory-token\n"
    );
    let (args, _, _) = run_admin(dir.path(), &dropin, &config("scim.example.toml"));
    let credentials: Vec<&String> = args
        .iter()
        .filter(|a| a.contains("LoadCredential"))
        .collect();
    assert_eq!(
        credentials,
        [
            "--property=LoadCredential=directory-token:/etc/seatwarden/directory-token",
            "--property=LoadCredentialEncrypted=workspace-token:/etc/seatwarden/workspace-token.cred",
        ]
    );
}

/// The helper's transient unit sees the files the service sees: the service's
/// ProtectSystem, ProtectHome, PrivateTmp and path and group directives, from the
/// unit and its drop-ins, are passed on. Without them a 0640 export readable through
/// a `SupplementaryGroups=` drop-in fails `check-config`, and one in /home passes it
/// while the service cannot read it.
#[cfg(unix)]
#[test]
fn the_admin_helper_runs_with_the_services_sandbox_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    admin_stubs(dir.path());
    let shipped = read("systemd/seatwarden.service");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/okta.example.toml");
    let sandbox_of = |args: &[String]| -> Vec<String> {
        let mut found: Vec<String> = args
            .iter()
            .filter_map(|a| a.strip_prefix("--property="))
            .filter(|p| !p.starts_with("LoadCredential"))
            .filter(|p| {
                ![
                    "DynamicUser=",
                    "User=",
                    "Group=",
                    "StateDirectory",
                    "UMask=",
                ]
                .iter()
                .any(|own| p.starts_with(own))
            })
            .map(str::to_owned)
            .collect();
        found.sort();
        found
    };

    let (args, _, _) = run_admin(dir.path(), &shipped, &config);
    assert_eq!(
        sandbox_of(&args),
        ["PrivateTmp=yes", "ProtectHome=yes", "ProtectSystem=strict"],
        "{args:?}"
    );

    // A drop-in: the last single-valued line wins, list lines add up, an empty
    // assignment resets the list; commented lines count for nothing.
    let dropin = format!(
        "{shipped}\n# /etc/systemd/system/seatwarden.service.d/export.conf\n[Service]\n\
         SupplementaryGroups=seatwarden-export\n\
         #SupplementaryGroups=commented\n\
         ProtectHome=tmpfs\n\
         ReadOnlyPaths=/srv/old\n\
         ReadOnlyPaths=\n\
         ReadOnlyPaths=/srv/seatwarden -/srv/optional\n\
         InaccessiblePaths=/srv/secret\n\
         BindReadOnlyPaths=/data/export:/srv/export\n"
    );
    let (args, _, _) = run_admin(dir.path(), &dropin, &config);
    assert_eq!(
        sandbox_of(&args),
        [
            "BindReadOnlyPaths=/data/export:/srv/export",
            "InaccessiblePaths=/srv/secret",
            "PrivateTmp=yes",
            "ProtectHome=tmpfs",
            "ProtectSystem=strict",
            "ReadOnlyPaths=/srv/seatwarden -/srv/optional",
            "SupplementaryGroups=seatwarden-export",
        ],
        "{args:?}"
    );
    // Options for systemd-run, not for seatwarden: before the command.
    let command = args
        .iter()
        .position(|a| a == "/usr/local/bin/seatwarden")
        .unwrap();
    let group = args
        .iter()
        .position(|a| a == "--property=SupplementaryGroups=seatwarden-export")
        .unwrap();
    assert!(group < command, "{args:?}");
}

/// The seconds of `key` (`TimeoutStopSec=45s`, `--stop-timeout 45`) in `text`.
fn seconds_after(text: &str, key: &str) -> u64 {
    let at = text.find(key).unwrap_or_else(|| panic!("no {key:?}")) + key.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

/// The systemd unit and the container's documented stop timeout wait longer
/// than the daemon can take to stop (its jobs' grace, the HTTP requests', the
/// blocking work's): a clean stop is never ended by SIGKILL.
#[test]
fn the_stop_timeouts_outlast_the_daemons_longest_stop() {
    let longest = seatwarden::daemon::longest_stop().as_secs();
    let unit = seconds_after(&read("systemd/seatwarden.service"), "\nTimeoutStopSec=");
    assert!(
        unit > longest,
        "TimeoutStopSec={unit}s, the stop takes up to {longest}s"
    );
    let dockerfile = read("Dockerfile");
    for key in [
        "--stop-timeout ",
        "stop_grace_period: ",
        "terminationGracePeriodSeconds: ",
    ] {
        let container = seconds_after(&dockerfile, key);
        assert!(
            container > longest,
            "{key}{container}, the stop takes up to {longest}s"
        );
    }
}
