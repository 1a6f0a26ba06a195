//! Session 36: a fresh operator's walkthrough (README's quickstart, every
//! `--help`, the mistakes people make in a first configuration), each rough
//! edge that was fixed pinned by a test. Run as the binary, as an operator runs it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use seatwarden::model::WorkspaceSnapshot;
use seatwarden::sandbox::{Sandbox, SandboxOptions};

/// A `[workspace]` body that loads (nothing is sent to it).
const WORKSPACE: &str = "url = \"https://scim.example.com/scim/v2\"\ntoken = \"t\"";

/// `seatwarden ARGS` in `cwd`, with no `SEATWARDEN_…` variable but `env`.
fn seatwarden(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_seatwarden"));
    for (name, _) in std::env::vars() {
        if name.starts_with("SEATWARDEN") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command
        .current_dir(cwd)
        .args(args)
        .envs(env.iter().copied());
    command.output().unwrap()
}

/// `seatwarden --config CONFIG check-config` in `cwd`, as [`seatwarden`].
fn check_config(cwd: &Path, env: &[(&str, &str)], config: &Path) -> Output {
    seatwarden(
        cwd,
        env,
        &["--config", config.to_str().unwrap(), "check-config"],
    )
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A file-directory configuration in `dir` with `workspace` as its `[workspace]`
/// body and `rest` after it; returns its path.
fn write_config(dir: &Path, workspace: &str, rest: &str) -> std::path::PathBuf {
    std::fs::write(
        dir.join("directory.json"),
        r#"{"users": [{"id": "00u1", "userName": "ada@example.com", "status": "active"}]}"#,
    )
    .unwrap();
    let path = dir.join("seatwarden.toml");
    std::fs::write(
        &path,
        format!(
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
             [workspace]\n{workspace}\n\n[state]\npath = \"state.db\"\n{rest}"
        ),
    )
    .unwrap();
    path
}

/// An empty sandbox workspace taking `token`, served by the runtime returned
/// with it (keep it alive as long as the sandbox is used).
fn empty_sandbox(token: &str) -> (tokio::runtime::Runtime, Sandbox) {
    seeded_sandbox(token, WorkspaceSnapshot::default())
}

/// A sandbox workspace holding `seed`, as [`empty_sandbox`].
fn seeded_sandbox(token: &str, seed: WorkspaceSnapshot) -> (tokio::runtime::Runtime, Sandbox) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sandbox = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Sandbox::start(
            listener,
            SandboxOptions {
                token: token.into(),
                ..SandboxOptions::default()
            },
            seed,
        )
        .await
        .unwrap()
    });
    (runtime, sandbox)
}

/// A loopback port nothing listens on (bound, then let go).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A workspace nobody answers at (a mistyped port or host, a firewall): the error
/// named the endpoint and the socket error, and left the operator to guess that
/// `workspace.url` is what to check. It says so now, and `plan` exits 1.
#[test]
fn an_unreachable_workspace_names_workspace_url_and_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let config = write_config(
        dir.path(),
        &format!("url = \"http://127.0.0.1:{port}/scim/v2\"\ntoken = \"t0ken\"\nretries = 0"),
        "",
    );
    let output = seatwarden(
        dir.path(),
        &[],
        &["--config", config.to_str().unwrap(), "plan"],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.contains(&format!("connection failed (127.0.0.1:{port})")),
        "{line}"
    );
    assert!(
        line.contains("check the host and port in workspace.url"),
        "{line}"
    );
}

/// README's quickstart sets `SEATWARDEN__WORKSPACE__TOKEN_FILE` from a shell; one
/// written relative (`=token`, from the folder the operator is in) is taken from
/// the configuration file's folder, as documented, and the error only showed
/// the resolved path: "cannot read secret file /etc/seatwarden/token". It says
/// now that the path was relative and where it was taken from.
#[test]
fn a_relative_secret_path_not_found_says_where_it_was_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    // The token is where the operator stands, not next to the configuration.
    std::fs::write(home.join("token"), "t0ken\n").unwrap();
    let config = write_config(&etc, "url = \"https://scim.example.com/scim/v2\"", "");
    let output = check_config(
        &home,
        &[("SEATWARDEN__WORKSPACE__TOKEN_FILE", "token")],
        &config,
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "environment variable SEATWARDEN__WORKSPACE__TOKEN_FILE: key `workspace.token_file`"
        ),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "workspace.token_file is the relative path \"token\", taken from the configuration \
             file's folder {}, not from the working directory",
            etc.display()
        )),
        "{err}"
    );

    // An absolute path that is not there gets the plain advice.
    let output = check_config(
        &home,
        &[(
            "SEATWARDEN__WORKSPACE__TOKEN_FILE",
            home.join("typo").to_str().unwrap(),
        )],
        &config,
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("; create it, or point workspace.token_file at the right file"),
        "{err}"
    );
    assert!(!err.contains("relative path"), "{err}");
}

/// The same for the directory export at a run (not only in `check-config`): a
/// `plan` whose `directory.path` is relative and missing says where it looked.
#[test]
fn a_run_whose_relative_directory_export_is_missing_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    // A workspace that answers, so the directory is what fails.
    let (_runtime, sandbox) = empty_sandbox("t0ken");
    let config = write_config(
        &etc,
        &format!("url = \"{}\"\ntoken = \"t0ken\"", sandbox.base_url()),
        "",
    );
    let output = seatwarden(
        dir.path(),
        &[("SEATWARDEN__DIRECTORY__PATH", "export.json")],
        &["--config", config.to_str().unwrap(), "plan"],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.starts_with("error: reading the directory: "), "{line}");
    assert!(
        line.contains(&format!(
            "directory.path is the relative path \"export.json\", taken from the configuration \
             file's folder {}",
            etc.display()
        )),
        "{line}"
    );
}

/// A configuration written from scratch meets its required keys first, and
/// `key `workspace.url`: missing` said nothing of what goes there. A missing
/// required key now says what it holds, with an example; a connector's points at
/// its example file, which must exist.
#[test]
fn a_missing_required_key_says_what_goes_there() {
    let dir = tempfile::tempdir().unwrap();
    let check = |body: &str| -> String {
        let config = dir.path().join("seatwarden.toml");
        std::fs::write(&config, body).unwrap();
        let output = check_config(dir.path(), &[], &config);
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        stderr(&output)
    };
    let err =
        check("[directory]\nkind = \"file\"\npath = \"d.json\"\n[workspace]\ntoken = \"t\"\n");
    assert!(
        err.contains(
            "key `workspace.url`: missing: the workspace's SCIM base URL, up to and including \
             the version, such as url = \"https://www.taskade.com/scim/v2\""
        ),
        "{err}"
    );
    let err = check(
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
         [workspace]\nurl = \"https://scim.example.com/v2\"\ntoken = \"t\"\n\
         [[policy.mapping]]\ngroup = \"Eng\"\nworkspace_group = \"Eng\"\n",
    );
    assert!(
        err.contains(
            "key `policy.mapping[0].role`: missing: the role the mapping gives, one of `Owner`, \
             `Maintainer`, `Editor`, `Commenter`, `Collaborator`, `Participant`, `Viewer`"
        ),
        "{err}"
    );
    for (kind, keys) in [
        (
            "ldap",
            "url = \"ldaps://dc1.example.com\"\nbind_dn = \"cn=svc\"\nbind_password = \"p\"",
        ),
        ("scim", "token = \"t\""),
    ] {
        let err = check(&format!(
            "[directory]\nkind = \"{kind}\"\n{keys}\n\
             [workspace]\nurl = \"https://scim.example.com/v2\"\ntoken = \"t\"\n"
        ));
        let example = format!("config/{kind}.example.toml");
        assert!(
            err.contains(&format!(
                "missing: {example} shows every key of a kind = \"{kind}\" directory"
            )),
            "{err}"
        );
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(&example)
                .is_file(),
            "{example} is named by the error but does not exist"
        );
    }
}

/// Every command's `--help` teaches what a first-time operator needs from it:
/// its exit codes and an example. check-config, link, explain, demo, sandbox,
/// daemon, status, report, digest, export and healthcheck had neither or one.
#[test]
fn every_command_help_gives_exit_codes_and_an_example() {
    use clap::CommandFactory;
    let mut cli = seatwarden::cli::Cli::command();
    cli.build();
    let mut missing = Vec::new();
    for sub in cli.get_subcommands_mut() {
        let name = sub.get_name().to_owned();
        if name == "help" {
            continue;
        }
        let help = sub.render_long_help().to_string();
        if !help.contains("Exit codes") {
            missing.push(format!("{name}: no \"Exit codes\""));
        }
        // An example is a line that runs seatwarden.
        let example = help.split("Example").skip(1).any(|after| {
            after
                .lines()
                .any(|l| l.trim_start().starts_with("seatwarden "))
        });
        if !example {
            missing.push(format!("{name}: no example"));
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

/// A token file saved by a Windows editor starts with a byte order mark, which
/// is not whitespace: it passed `check-config`, was sent as part of the token,
/// and the workspace's 401 sent the operator after a token that was right. It is
/// dropped now, from token and password files alike. A UTF-16 file (Windows
/// PowerShell's `Out-File`) is refused saying how to save it.
#[test]
fn a_token_file_with_a_byte_order_mark_is_read_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_runtime, sandbox) = empty_sandbox("t0ken");
    let config = write_config(
        dir.path(),
        &format!("url = \"{}\"\ntoken_file = \"token\"", sandbox.base_url()),
        "",
    );
    let token = dir.path().join("token");
    std::fs::write(&token, "\u{feff}t0ken\r\n").unwrap();
    let output = seatwarden(
        dir.path(),
        &[],
        &["--config", config.to_str().unwrap(), "plan"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    // UTF-16 with its BOM, as `"t0ken" | Out-File token` writes it.
    let utf16: Vec<u8> = [0xff, 0xfe]
        .into_iter()
        .chain("t0ken\r\n".encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    std::fs::write(&token, utf16).unwrap();
    let output = check_config(dir.path(), &[], &config);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("; save it as UTF-8 text"), "{err}");
}

/// Errors name the configuration file as `--config` gave it, but a value the
/// `config` crate refused itself (a negative number for a count) named it as
/// that crate opened it: relative to the working directory when the file is
/// under it (`etc/seatwarden.toml` after `--config /srv/x/etc/seatwarden.toml`).
/// Every error names the path given now.
#[test]
fn every_configuration_error_names_the_file_as_it_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let config = write_config(
        &etc,
        "url = \"https://scim.example.com/scim/v2\"\ntoken = \"t\"\npage_size = -1",
        "",
    );
    let output = check_config(dir.path(), &[], &config);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "error: {}: key `workspace.page_size`: expected a whole number from 1 to 4294967295, \
             found the number -1",
            config.display()
        )),
        "{err}"
    );
}

/// `token_file` pointed at the credentials folder rather than the file in it
/// was warned about as a world-readable secret (a folder's 0755) before the
/// error, which said "Is a directory" and no more. No warning now, and the error
/// says what to point the key at.
#[test]
fn a_secret_path_that_is_a_folder_is_not_warned_about_as_a_loose_secret() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    std::fs::write(credentials.join("workspace-token"), "t0ken").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let config = write_config(
        dir.path(),
        "url = \"https://scim.example.com/scim/v2\"\ntoken_file = \"credentials\"",
        "",
    );
    let output = check_config(dir.path(), &[], &config);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(!err.contains("can be read by every user"), "{err}");
    assert!(
        err.contains("; that is a folder: point workspace.token_file at the file in it"),
        "{err}"
    );
}

/// `timezone = "europe/berlin"` or `"Berlin"` was refused with a generic "use an
/// IANA name such as Europe/Berlin": the zone meant is named now, for
/// `schedule.timezone` and `report.timezone` alike; a name that resembles none
/// keeps the generic advice.
#[test]
fn a_time_zone_spelt_otherwise_names_the_zone_meant() {
    let dir = tempfile::tempdir().unwrap();
    let check = |rest: &str| -> String {
        let config = write_config(dir.path(), WORKSPACE, rest);
        let output = check_config(dir.path(), &[], &config);
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        stderr(&output)
    };
    let err = check("[schedule]\ntimezone = \"europe/berlin\"\n");
    assert!(
        err.contains(
            "key `schedule.timezone`: unknown time zone \"europe/berlin\": IANA names are \
             spelt exactly; did you mean \"Europe/Berlin\"?"
        ),
        "{err}"
    );
    let err = check("[report]\ntimezone = \"New York\"\n");
    assert!(
        err.contains("key `report.timezone`: unknown time zone \"New York\"")
            && err.contains("did you mean \"America/New_York\"?"),
        "{err}"
    );
    let err = check("[schedule]\ntimezone = \"CET+1\"\n");
    assert!(
        err.contains("use an IANA name such as \"Europe/Berlin\" or \"UTC\""),
        "{err}"
    );
}

/// `systemd/seatwarden-admin` documents `SEATWARDEN_BIN` for operators to set;
/// exported in their shell, every `seatwarden` command warned that it "is not
/// read: an override is spelt SEATWARDEN__SECTION__KEY". A variable the shipped
/// deployment files name is not warned about; a misspelt override still is.
#[test]
fn a_variable_the_deployment_files_document_is_not_warned_about() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut named = std::collections::BTreeSet::new();
    for file in [
        "systemd/seatwarden-admin",
        "systemd/seatwarden.service",
        "systemd/README.md",
        "Dockerfile",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for (at, _) in text.match_indices("SEATWARDEN_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.starts_with("SEATWARDEN__") {
                named.insert(name);
            }
        }
    }
    assert!(named.contains("SEATWARDEN_BIN"), "{named:?}");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), WORKSPACE, "");
    std::fs::write(dir.path().join("d.json"), r#"{"users": []}"#).unwrap();
    for name in &named {
        let output = check_config(
            dir.path(),
            &[(name.as_str(), "/usr/local/bin/seatwarden")],
            &config,
        );
        let err = stderr(&output);
        assert!(!err.contains("is not read"), "{name}: {err}");
    }
    let output = check_config(dir.path(), &[("SEATWARDEN_STATE_PATH", "x.db")], &config);
    assert!(
        stderr(&output).contains("environment variable SEATWARDEN_STATE_PATH is not read"),
        "{}",
        stderr(&output)
    );
}

/// `SEATWARDEN__POLICY__MAPPING__0__ROLE=Owner` (an operator trying to override
/// one mapping's role) was blamed on the file: "seatwarden.toml: key
/// `policy.mapping`: expected a list, found a table", which sent them looking
/// at a file that was right. It names the variable and why it cannot be now.
#[test]
fn a_variable_into_a_mapping_is_named_and_refused_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        WORKSPACE,
        "\n[[policy.mapping]]\ngroup = \"Eng\"\nworkspace_group = \"Eng\"\nrole = \"Editor\"\n",
    );
    let output = check_config(
        dir.path(),
        &[("SEATWARDEN__POLICY__MAPPING__0__ROLE", "Owner")],
        &config,
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "error: environment variable SEATWARDEN__POLICY__MAPPING__0__ROLE: key \
             `policy.mapping.0.role`: the [[policy.mapping]] tables are read from the file only"
        ),
        "{err}"
    );
}

/// `smtp_url = "mail.example.com"`, a host as mail clients take it, was refused
/// with the `url` crate's "relative URL without a base"; it says now how to
/// write it, as `workspace.url` does.
#[test]
fn an_smtp_host_without_a_scheme_is_told_how_to_write_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        WORKSPACE,
        "\n[report.email]\nsmtp_url = \"mail.example.com\"\nfrom = \"a@example.com\"\n\
         to = [\"b@example.com\"]\n",
    );
    let output = check_config(dir.path(), &[], &config);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "key `report.email.smtp_url`: not a URL: \"mail.example.com\" has no scheme; write \
             it in full, such as \"smtps://mail.example.com:465\""
        ),
        "{err}"
    );
}

/// A `state.path` whose folder does not exist failed `plan` with "cannot create
/// the state database …: No such file or directory" alone (the warning before it
/// said what to do, a log line a first run can miss); the error says it too.
#[test]
fn a_state_database_in_a_missing_folder_says_to_create_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), WORKSPACE, "");
    let output = seatwarden(
        dir.path(),
        &[("SEATWARDEN__STATE__PATH", "trial/state.db")],
        &["--config", config.to_str().unwrap(), "plan"],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot create the state database {}: No such file or directory (os error 2); its \
             folder does not exist: create it",
            dir.path().join("trial/state.db").display()
        )),
        "{err}"
    );
    assert!(!dir.path().join("trial").exists());
}

/// An empty inline secret asked "(an empty environment variable?)" also when the
/// file said `token = ""`: the message now tells the two apart.
#[test]
fn an_empty_inline_secret_says_whether_the_file_or_a_variable_emptied_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "url = \"https://scim.example.com/scim/v2\"\ntoken = \"\"",
        "",
    );
    let run = |env: &[(&str, &str)]| {
        let output = seatwarden(
            dir.path(),
            env,
            &["--config", config.to_str().unwrap(), "check-config"],
        );
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        stderr(&output)
    };
    let err = run(&[]);
    assert!(
        err.contains(&format!(
            "{}: key `workspace.token`: is empty; set the secret, or token_file instead of token",
            config.display()
        )),
        "{err}"
    );
    assert!(!err.contains("variable"), "{err}");
    let err = run(&[("SEATWARDEN__WORKSPACE__TOKEN", "")]);
    assert!(
        err.contains(
            "environment variable SEATWARDEN__WORKSPACE__TOKEN: key `workspace.token`: is empty: \
             the variable is set, to nothing"
        ),
        "{err}"
    );
}

/// `approve` re-reads the workspace before it applies anything; a token refused
/// or a workspace out of reach failed it with the endpoint and status alone,
/// where a run says what to check. It says the same now.
#[test]
fn approve_whose_workspace_read_fails_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    // An account nobody in the directory justifies, deactivated by policy, and
    // held by a threshold of 0: run 1 holds one deprovision.
    let (runtime, sandbox) = seeded_sandbox(
        "t0ken",
        WorkspaceSnapshot {
            accounts: vec![seatwarden::model::Account {
                id: "a-bob".into(),
                user_name: "bob@example.com".into(),
                external_id: None,
                given_name: None,
                family_name: None,
                display_name: None,
                email: Some("bob@example.com".into()),
                active: true,
                roles: vec!["Viewer".into()],
            }],
            groups: Vec::new(),
        },
    );
    let config = write_config(
        dir.path(),
        &format!(
            "url = \"{}\"\ntoken = \"t0ken\"\nretries = 0",
            sandbox.base_url()
        ),
        "\n[policy]\nunmatched_accounts = \"deactivate\"\n\n[safety]\nmax_deprovisions = 0\nsettle = \"0s\"\n",
    );
    let config = config.to_str().unwrap();
    let output = seatwarden(dir.path(), &[], &["--config", config, "reconcile"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    // A token the workspace refuses names the token keys.
    let output = seatwarden(
        dir.path(),
        &[("SEATWARDEN__WORKSPACE__TOKEN", "wr0ng")],
        &["--config", config, "approve", "1"],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("HTTP 401") && err.contains("check workspace.token or the file"),
        "{err}"
    );
    // The workspace goes down: its port is closed (another URL would be another
    // workspace, which the state database refuses before any request).
    drop(sandbox);
    drop(runtime);
    let output = seatwarden(dir.path(), &[], &["--config", config, "approve", "1"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.contains("connection failed"), "{line}");
    assert!(
        line.contains("check the host and port in workspace.url"),
        "{line}"
    );
}

/// `https://` for a port that serves plain HTTP (the sandbox, a sidecar) failed
/// with "TLS handshake failed …: received corrupt message of type
/// InvalidContentType" after some 20 s of retries that could only meet it
/// again. It fails at once now, saying the port does not speak TLS.
#[test]
fn https_to_a_plain_http_port_fails_at_once_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let (_runtime, sandbox) = empty_sandbox("t0ken");
    let url = sandbox
        .base_url()
        .to_string()
        .replacen("http://", "https://", 1);
    let config = write_config(
        dir.path(),
        &format!("url = \"{url}\"\ntoken = \"t0ken\""),
        "",
    );
    let started = std::time::Instant::now();
    let output = seatwarden(
        dir.path(),
        &[],
        &["--config", config.to_str().unwrap(), "plan"],
    );
    let elapsed = started.elapsed();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "; the server on that port does not speak TLS: if it serves plain HTTP (a sandbox, \
             a sidecar on loopback), the URL starts with http://"
        ),
        "{err}"
    );
    // The default retries wait about 20 s in all; none is made.
    assert!(!err.contains("retrying"), "{err}");
    assert!(elapsed < std::time::Duration::from_secs(10), "{elapsed:?}");
}

/// Without `[report.email]` the digest has nowhere to go: the daemon does not
/// schedule it (so `status` shows no next digest to expect), and `check-config`
/// says it is off and why; with `[report.email]` it is scheduled. Before, the
/// daemon fired it every weekday, logged a warning and recorded a success.
#[test]
fn a_digest_with_nowhere_to_go_is_not_scheduled() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = "url = \"http://127.0.0.1:9/scim/v2\"\ntoken = \"t\"";
    let path = write_config(dir.path(), workspace, "");
    let load = |path: &Path| {
        seatwarden::config::Config::load_with_env(path, Some(Default::default())).unwrap()
    };
    let settings = load(&path).daemon_settings().unwrap();
    assert!(settings.digest.is_none());
    let jobs: Vec<&str> = seatwarden::daemon::scheduled_jobs(&settings)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert!(!jobs.contains(&"digest"), "{jobs:?}");
    let output = check_config(dir.path(), &[], &path);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output)
            .contains("  digest     0 8 * * 1-5      off: no [report.email] to send it to"),
        "{}",
        stderr(&output)
    );

    let path = write_config(
        dir.path(),
        workspace,
        "\n[report.email]\nsmtp_url = \"smtp://127.0.0.1:25\"\nfrom = \"sw@example.com\"\n\
         to = [\"it@example.com\"]\n",
    );
    let settings = load(&path).daemon_settings().unwrap();
    assert_eq!(
        settings.digest.map(|s| s.pattern().to_owned()).as_deref(),
        Some("0 8 * * 1-5")
    );
}

/// `SEATWARDEN__WORKSPACE_URL` (one `_` where the section meets the key) was
/// refused as "unknown field `workspace_url`" with the nine sections, and
/// nothing said which variable was meant. The error names the spelling meant
/// now, found by loading the configuration with it: a key with `_` in its name
/// (`token_file`) is not split, a nested one (`report.email.to`) is found, also
/// with both levels missed, and a key that is no section's (`safety.page_size`)
/// is suggested nothing.
#[test]
fn an_override_missing_an_underscore_names_the_variable_meant() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), WORKSPACE, "");
    for (name, meant) in [
        (
            "SEATWARDEN__WORKSPACE_URL",
            Some("SEATWARDEN__WORKSPACE__URL"),
        ),
        (
            "SEATWARDEN__WORKSPACE_TOKEN_FILE",
            Some("SEATWARDEN__WORKSPACE__TOKEN_FILE"),
        ),
        (
            "SEATWARDEN__REPORT__EMAIL_TO",
            Some("SEATWARDEN__REPORT__EMAIL__TO"),
        ),
        // Two levels missed.
        (
            "SEATWARDEN__REPORT_EMAIL_TO",
            Some("SEATWARDEN__REPORT__EMAIL__TO"),
        ),
        (
            "SEATWARDEN__SAFETY_CIRCUIT_WINDOW",
            Some("SEATWARDEN__SAFETY__CIRCUIT__WINDOW"),
        ),
        ("SEATWARDEN__SAFETY__PAGE_SIZE", None),
        ("SEATWARDEN__WORKSPACE_URLS", None),
        ("SEATWARDEN__STATE_PATH_X", None),
    ] {
        let output = check_config(dir.path(), &[(name, "a")], &config);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.starts_with(&format!("error: environment variable {name}: key `")),
            "{name}: {err}"
        );
        match meant {
            Some(meant) => assert!(
                err.trim_end().ends_with(&format!(
                    "; an override is spelt SEATWARDEN__SECTION__KEY, with two underscores \
                     between the levels: did you mean {meant}?"
                )),
                "{name}: {err}"
            ),
            None => assert!(!err.contains("did you mean"), "{name}: {err}"),
        }
    }
}

/// `explain --live` against a workspace that refused the token, or that nothing
/// answered at, showed the bare error ("HTTP 401 …", "connection failed …"),
/// where a run's read of the same workspace says what to check. It says the same
/// now, in the line that shows the live account.
#[test]
fn explain_live_whose_read_fails_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, sandbox) = empty_sandbox("t0ken");
    let config = write_config(
        dir.path(),
        &format!(
            "url = \"{}\"\ntoken = \"t0ken\"\nretries = 0",
            sandbox.base_url()
        ),
        "",
    );
    let config = config.to_str().unwrap();
    let output = seatwarden(dir.path(), &[], &["--config", config, "plan"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let explain = |env: &[(&str, &str)]| {
        let output = seatwarden(
            dir.path(),
            env,
            &["--config", config, "explain", "ada@example.com", "--live"],
        );
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let out = String::from_utf8_lossy(&output.stdout).into_owned();
        out.lines()
            .find(|l| l.contains("could not be read: "))
            .unwrap_or_else(|| panic!("no failed live read: {out}"))
            .to_owned()
    };
    let line = explain(&[("SEATWARDEN__WORKSPACE__TOKEN", "wr0ng")]);
    assert!(line.contains("HTTP 401"), "{line}");
    assert!(
        line.ends_with(
            "; check workspace.token or the file workspace.token_file names (revoked, \
             expired, or short of a scope)"
        ),
        "{line}"
    );
    drop(sandbox);
    drop(runtime);
    let url = format!("http://127.0.0.1:{}/scim/v2", closed_port());
    let line = explain(&[("SEATWARDEN__WORKSPACE__URL", &url)]);
    assert!(line.contains("connection failed"), "{line}");
    assert!(
        line.contains("; check the host and port in workspace.url"),
        "{line}"
    );
}

/// A reconcile's recovery of a cut-off run reads the workspace (`/Users`) after
/// discovery: a provider that answers `/ServiceProviderConfig` to anyone (RFC
/// 7644 lets it) but refuses the token on `/Users` failed the run with "applying
/// the plan: reading the workspace: … HTTP 403 …", naming a plan that was never
/// made and not the token. The recovery's read says what a run's read says now,
/// and the row stays in flight for the next run.
#[tokio::test]
async fn a_recovery_read_refused_after_discovery_names_the_token() {
    use seatwarden::store::{ActionState, Store};

    let server = crate::run_recovery::discovery_passes_then_403().await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::fixtures::ada_config(&server.uri(), dir.path(), "deprovisioned");
    // A deactivation a reconcile sent and then died: in flight.
    let crashed = crate::run_recovery::crashed_deactivation(&config);
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let error = seatwarden::run::execute_with_options(
        &config,
        &seatwarden::run::directory_from_config(&config),
        &client,
        Store::open(&config.state.path).unwrap(),
        seatwarden::run::Mode::Reconcile,
        seatwarden::run::RunOptions::default(),
    )
    .await
    .unwrap_err()
    .to_string();

    assert!(
        error.starts_with("reading the workspace: GET /Users")
            && error.contains("HTTP 403")
            && error.contains("insufficient scope")
            && error.ends_with(
                "; check workspace.token or the file workspace.token_file names (revoked, \
                 expired, or short of a scope)"
            ),
        "{error}"
    );
    let journal = Store::open(&config.state.path)
        .unwrap()
        .journal(crashed)
        .unwrap();
    assert_eq!(journal[0].state, ActionState::InFlight, "{error}");
}

/// `check-config` printed an empty `[workspace.role_groups]` table under every
/// configuration, role groups or not, which read as a section left to fill in.
/// It is left out when empty, and printed with its groups when there are some.
#[test]
fn check_config_prints_role_groups_only_when_there_are_some() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), WORKSPACE, "");
    let output = check_config(dir.path(), &[], &config);
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(out.contains("[workspace]\n"), "{out}");
    assert!(!out.contains("role_groups"), "{out}");
    let config = write_config(
        dir.path(),
        "url = \"https://scim.example.com/scim/v2\"\ntoken = \"t\"\nrole_attribute = \"groups\"\n\
         [workspace.role_groups]\nViewer = \"Taskade Viewers\"",
        "",
    );
    let output = check_config(dir.path(), &[], &config);
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        out.contains("[workspace.role_groups]\nViewer = \"Taskade Viewers\"\n"),
        "{out}"
    );
}

/// `check-config` with `SEATWARDEN__DIRECTORY__PATH` naming an export that does
/// not parse (or is neither JSON nor CSV) blamed the configuration file
/// ("seatwarden.toml: directory: invalid directory file …"), which does not name
/// that export. The error is put on the variable now, as an unreadable export's
/// already was; with the path in the file, the file is still named.
#[test]
fn a_bad_directory_export_set_by_a_variable_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), WORKSPACE, "");
    let config = config.to_str().unwrap();
    std::fs::write(dir.path().join("bad.json"), "{\"users\": [").unwrap();
    std::fs::write(dir.path().join("directory.txt"), "{\"users\": []}").unwrap();
    for (file, says) in [
        ("bad.json", ": directory: invalid directory file "),
        ("directory.txt", ": directory: directory file "),
    ] {
        let output = seatwarden(
            dir.path(),
            &[("SEATWARDEN__DIRECTORY__PATH", file)],
            &["--config", config, "check-config"],
        );
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!(
                "error: environment variable SEATWARDEN__DIRECTORY__PATH{says}"
            )),
            "{file}: {err}"
        );
    }
    let text = std::fs::read_to_string(config)
        .unwrap()
        .replace("path = \"directory.json\"", "path = \"bad.json\"");
    std::fs::write(config, text).unwrap();
    let output = seatwarden(dir.path(), &[], &["--config", config, "check-config"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "error: {config}: directory: invalid directory file "
        )),
        "{err}"
    );
}
