//! The real binary: help that teaches, exit codes, and secrets kept out of output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

fn seatwarden(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_seatwarden"));
    command.args(args).env_remove("SEATWARDEN_CONFIG");
    for (key, _) in std::env::vars() {
        if key.starts_with("SEATWARDEN__") {
            command.env_remove(key);
        }
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_documents_commands_and_exit_codes() {
    let out = seatwarden(&["--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for needle in [
        "check-config",
        "plan",
        "reconcile",
        "report",
        "Exit codes",
        "SEATWARDEN__",
    ] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn check_config_prints_the_effective_config_without_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example/seatwarden.toml");
    let config = dir.path().join("seatwarden.toml");
    std::fs::copy(&example, &config).unwrap();
    std::fs::copy(
        example.with_file_name("directory.json"),
        dir.path().join("directory.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("token"), "very-secret-token\n").unwrap();
    let token_file = dir.path().join("token");
    let out = seatwarden(
        &["--config", config.to_str().unwrap(), "check-config"],
        &[
            (
                "SEATWARDEN__WORKSPACE__TOKEN_FILE",
                token_file.to_str().unwrap(),
            ),
            ("SEATWARDEN__WORKSPACE__PAGE_SIZE", "250"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("page_size = 250"), "{stdout}");
    assert!(!stdout.contains("very-secret-token"));
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("very-secret-token"));
    // The schedule's next fires, to check the cron expressions and their zone.
    assert!(stderr.contains("the daemon's schedule ("), "{stderr}");
    let sweep = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("sweep"))
        .unwrap_or_default();
    assert!(
        sweep.contains(" next ") && sweep.contains(", then "),
        "{stderr}"
    );
}

/// A sweep schedule that leaves longer than the SLA without any sweep or
/// reconcile is accepted, with a warning that says how long and from when.
#[test]
fn check_config_warns_when_sweeps_are_further_apart_than_the_sla() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seatwarden.toml");
    std::fs::write(
        &config,
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
         [workspace]\nurl = \"https://x.example/scim/v2\"\ntoken = \"t\"\n\
         [schedule]\ntimezone = \"UTC\"\nsweep = \"0 9 * * 1\"\nreconcile = \"0 9 * * 1\"\n",
    )
    .unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo/directory.json"),
        dir.path().join("d.json"),
    )
    .unwrap();
    let out = seatwarden(&["--config", config.to_str().unwrap(), "check-config"], &[]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: schedule.sweep: no sweep or reconcile runs for up to 7d (from Mon 09:00 UTC), longer than deprovision.sla (1h)"),
        "{stderr}"
    );
}

/// Mistakes a first configuration makes, each named with its key and how to fix
/// it: a state folder that does not exist (warned: every run would fail after
/// reading both sides), a URL without its scheme, an hour out of range.
#[test]
fn check_config_names_the_key_of_a_missing_state_folder_a_bare_host_and_a_bad_hour() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo/directory.json"),
        dir.path().join("d.json"),
    )
    .unwrap();
    let config = dir.path().join("seatwarden.toml");
    let check = |url: &str, state: &str, reconcile: &str| {
        std::fs::write(
            &config,
            format!(
                "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
                 [workspace]\nurl = \"{url}\"\ntoken = \"t\"\n\
                 [state]\npath = \"{state}\"\n[schedule]\nreconcile = \"{reconcile}\"\n"
            ),
        )
        .unwrap();
        let out = seatwarden(&["--config", config.to_str().unwrap(), "check-config"], &[]);
        (out.status.code(), text(&out.stderr))
    };
    let fine = "https://x.example/scim/v2";
    let (code, stderr) = check(fine, "state.db", "*/30 * * * *");
    assert_eq!(code, Some(0), "{stderr}");

    // A warning: systemd's StateDirectory= creates the folder at the first start.
    let (code, stderr) = check(fine, "no-such-folder/state.db", "*/30 * * * *");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: state.path: its folder ") && stderr.contains("no-such-folder"),
        "{stderr}"
    );
    assert!(!dir.path().join("no-such-folder").exists());

    let (code, stderr) = check("x.example/scim/v2", "state.db", "*/30 * * * *");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("workspace.url")
            && stderr
                .contains("has no scheme; write it in full, such as \"https://x.example/scim/v2\""),
        "{stderr}"
    );

    let (code, stderr) = check(fine, "state.db", "0 25 * * *");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("schedule.reconcile")
            && stderr.contains("25 is out of range in the hour field (0–23)"),
        "{stderr}"
    );
}

/// `check-config` reads every file the configuration names, as the service will,
/// and fails naming the key and the file, so a deployment is not found broken
/// by its first scheduled run.
#[test]
fn check_config_fails_on_any_file_the_service_could_not_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(dir.path().join("token"), "t\n").unwrap();
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    std::fs::write(dir.path().join("not-pem"), "hello\n").unwrap();
    std::fs::write(dir.path().join("broken.json"), "[{\"id\": \"1\",").unwrap();
    // Well formed, and no one in them: a run would be a source fault.
    std::fs::write(dir.path().join("zero.json"), "").unwrap();
    std::fs::write(dir.path().join("zero.csv"), "\n").unwrap();
    let workspace = format!(
        "[workspace]\nurl = \"https://x.example/scim/v2\"\ntoken_file = \"{}\"\n",
        path("token")
    );
    let cases = [
        (
            format!(
                "[directory]\nkind = \"file\"\npath = \"{}\"\n",
                path("broken.json")
            ),
            "broken.json",
        ),
        (
            format!(
                "[directory]\nkind = \"file\"\npath = \"{}\"\n",
                path("zero.json")
            ),
            "zero.json: top level: it holds no one",
        ),
        (
            format!(
                "[directory]\nkind = \"file\"\npath = \"{}\"\n",
                path("zero.csv")
            ),
            "zero.csv: top level: it holds no one",
        ),
        (
            format!(
                "[directory]\nkind = \"okta\"\nurl = \"https://acme.okta.com\"\ntoken_file = \"{}\"\n",
                path("missing")
            ),
            "directory.token_file",
        ),
        (
            format!(
                "[directory]\nkind = \"okta\"\nurl = \"https://acme.okta.com\"\nclient_id = \"0oa1\"\nprivate_key_file = \"{}\"\n",
                path("not-pem")
            ),
            "directory.private_key_file",
        ),
        (
            format!(
                "[directory]\nkind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret_file = \"{}\"\n",
                path("empty")
            ),
            "directory.client_secret_file",
        ),
        (
            format!(
                "[directory]\nkind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\ncertificate_file = \"{}\"\nprivate_key_file = \"{}\"\n",
                path("not-pem"),
                path("not-pem")
            ),
            "directory.certificate_file",
        ),
        (
            format!(
                "[directory]\nkind = \"ldap\"\nflavor = \"openldap\"\nurl = \"ldaps://ldap.example\"\nca_file = \"{}\"\nbind_dn = \"cn=svc\"\nbind_password_file = \"{}\"\nbase_dn = \"dc=example\"\n",
                path("not-pem"),
                path("token")
            ),
            "directory.ca_file",
        ),
        (
            format!(
                "[directory]\nkind = \"ldap\"\nflavor = \"openldap\"\nurl = \"ldaps://ldap.example\"\nbind_dn = \"cn=svc\"\nbind_password_file = \"{}\"\nbase_dn = \"dc=example\"\n",
                path("missing")
            ),
            "directory.bind_password_file",
        ),
        (
            format!(
                "[directory]\nkind = \"scim\"\nurl = \"https://idp.example/scim/v2\"\ntoken_file = \"{}\"\n",
                path("empty")
            ),
            "directory.token_file",
        ),
        (
            format!(
                "[directory]\nkind = \"okta\"\nurl = \"https://acme.okta.com\"\ntoken_file = \"{}\"\n[http]\ntrigger_token_file = \"{}\"\n",
                path("token"),
                path("empty")
            ),
            "http.trigger_token_file",
        ),
    ];
    for (directory, key) in cases {
        let config = dir.path().join("seatwarden.toml");
        std::fs::write(&config, format!("{directory}{workspace}")).unwrap();
        let out = seatwarden(&["--config", config.to_str().unwrap(), "check-config"], &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{key}: {stderr}");
        assert!(stderr.contains(key), "{key}: {stderr}");
        assert!(stderr.contains("seatwarden.toml"), "{key}: {stderr}");
        // The daemon does not start on a credential it cannot use: started, it
        // would answer /healthz while every job failed. A broken export is data,
        // not configuration: that is a failed run and an alert, so it starts.
        let log = dir.path().join("daemon.log");
        let mut daemon = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .args(["--config", config.to_str().unwrap(), "daemon"])
            .env_remove("SEATWARDEN_CONFIG")
            .env("SEATWARDEN__HTTP__LISTEN", "127.0.0.1:0")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let exited = loop {
            if let Some(status) = daemon.try_wait().unwrap() {
                break Some(status.code());
            }
            if std::fs::read_to_string(&log)
                .unwrap()
                .contains("daemon started")
            {
                daemon.kill().unwrap();
                daemon.wait().unwrap();
                break None;
            }
            assert!(std::time::Instant::now() < deadline, "{key}: neither");
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let stderr = std::fs::read_to_string(&log).unwrap();
        if key == "broken.json" || key.contains("holds no one") {
            assert_eq!(exited, None, "{key}: {stderr}");
        } else {
            assert_eq!(exited, Some(Some(1)), "{key}: {stderr}");
            assert!(stderr.contains(key), "{key}: {stderr}");
        }
    }
    // Every file readable and well formed: accepted.
    let config = dir.path().join("seatwarden.toml");
    std::fs::write(
        &config,
        format!(
            "[directory]\nkind = \"okta\"\nurl = \"https://acme.okta.com\"\ntoken_file = \"{}\"\n{workspace}",
            path("token")
        ),
    )
    .unwrap();
    let out = seatwarden(&["--config", config.to_str().unwrap(), "check-config"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn an_invalid_config_exits_1_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broken.toml");
    std::fs::write(
        &config,
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n[workspace]\nurl = \"https://x.example\"\ntoken = \"t\"\nmax_concurency = 4\n",
    )
    .unwrap();
    let out = seatwarden(&["--config", config.to_str().unwrap(), "plan"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("max_concurency"), "{stderr}");
    assert!(stderr.contains("broken.toml"), "{stderr}");
}

#[test]
fn an_unreadable_directory_exits_1_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seatwarden.toml");
    std::fs::write(
        &config,
        "[directory]\nkind = \"file\"\npath = \"missing.json\"\n[workspace]\nurl = \"http://127.0.0.1:9\"\ntoken = \"t\"\n",
    )
    .unwrap();
    let out = seatwarden(&["--config", config.to_str().unwrap(), "plan"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("missing.json (directory.path)"), "{stderr}");
    // A state database that cannot be created names its key and file once.
    std::fs::write(
        &config,
        "[directory]\nkind = \"file\"\npath = \"missing.json\"\n[workspace]\nurl = \"http://127.0.0.1:9\"\ntoken = \"t\"\n[state]\npath = \"no/such/dir/state.db\"\n",
    )
    .unwrap();
    let out = seatwarden(&["--config", config.to_str().unwrap(), "plan"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("state.path in ") && stderr.contains("seatwarden.toml: cannot create"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("state.db").count(), 1, "{stderr}");
}

#[test]
fn command_help_names_the_exit_codes_the_table_lists_and_the_code_returns() {
    let help = text(&seatwarden(&["--help"], &[]).stdout);
    let table: Vec<&str> = help
        .lines()
        .skip_while(|line| !line.starts_with("Exit codes"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .collect();
    let code_line = |code: u8| {
        table
            .iter()
            .find(|line| line.trim_start().starts_with(&format!("{code} ")))
            .copied()
    };
    let commands: Vec<String> = help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .filter(|command| command != "help")
        .collect();
    assert!(commands.len() > 10, "{commands:?}");
    for command in &commands {
        let sub = text(&seatwarden(&[command.as_str(), "--help"], &[]).stdout);
        let words: Vec<&str> = sub.split_whitespace().collect();
        for pair in words.windows(2) {
            if !matches!(pair[0].to_lowercase().as_str(), "exit" | "exits") {
                continue;
            }
            let Ok(code) = pair[1].trim_end_matches([',', '.', ';', ')']).parse::<u8>() else {
                continue;
            };
            assert!(
                code_line(code).is_some(),
                "`{command} --help` names exit {code}, which the table lacks"
            );
        }
    }
    // Codes that belong to one command are named by that command as they are returned.
    let status = text(&seatwarden(&["status", "--help"], &[]).stdout);
    assert!(
        status.contains(&format!("exit {} when", seatwarden::cli::exit::OVERDUE)),
        "{status}"
    );
    let plan = text(&seatwarden(&["plan", "--help"], &[]).stdout);
    assert!(
        plan.contains(&format!("Exit {} when", seatwarden::cli::exit::CHANGES)),
        "{plan}"
    );
}

/// The commands whose exit codes scripts rely on say them in their own --help.
#[test]
fn subcommand_help_gives_its_exit_codes() {
    for (command, needle) in [
        ("plan", "2 the plan has changes"),
        ("reconcile", "5 the directory was rejected"),
        ("approve", "3 some were refused"),
        ("send-mail", "4 the mail server refused a message for good"),
    ] {
        let out = seatwarden(&[command, "--help"], &[]);
        assert!(out.status.success(), "{command}");
        let help = text(&out.stdout);
        assert!(help.contains("Exit codes"), "{command}: {help}");
        assert!(help.contains(needle), "{command}: {help}");
    }
}

/// A command line that does not parse exits 64 (EX_USAGE), never 2, which
/// `plan --detailed-exitcode` uses for "the plan has changes"; help exits 0.
#[test]
fn a_usage_error_is_not_taken_for_changes() {
    let out = seatwarden(&["plan", "--detailed-exitcode", "--formt", "json"], &[]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(seatwarden::cli::exit::USAGE))
    );
    assert!(
        text(&out.stderr).contains("--formt"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(seatwarden(&["plan", "--help"], &[]).status.code(), Some(0));
    assert_eq!(seatwarden(&["--version"], &[]).status.code(), Some(0));
}

/// A decision names its run: `approve latest` might approve a newer plan than the
/// one that was read, so it is a usage error that says what to give instead.
#[test]
fn approve_and_reject_take_a_run_id_not_latest() {
    for command in ["approve", "reject"] {
        for run in ["latest", "0", "forty-two"] {
            let out = seatwarden(&[command, run], &[]);
            assert_eq!(
                out.status.code(),
                Some(i32::from(seatwarden::cli::exit::USAGE)),
                "{command} {run}"
            );
            let stderr = text(&out.stderr);
            let wanted = if run == "latest" {
                "the id that `seatwarden report` shows"
            } else {
                "a run id is a positive number"
            };
            assert!(stderr.contains(wanted), "{command} {run}: {stderr}");
        }
    }
}

/// `seatwarden demo | head -1`: the reader goes away while the command still
/// prints. It ends quietly with 141 (what a shell shows for SIGPIPE), not a panic.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["demo", "--dir"])
        .arg(dir.path().join("demo"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 15];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    assert_eq!(&first, b"seatwarden demo");
    // The pipe's read end is closed here: every later write fails.
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(i32::from(seatwarden::cli::exit::STDOUT_CLOSED)),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}

/// A command that reads what runs stored does not make an empty database where
/// `state.path` points: `status` on a wrong path would otherwise report "nothing
/// pending" and keep a monitoring check green.
#[test]
fn reading_commands_refuse_a_missing_state_database_and_create_none() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seatwarden.toml");
    std::fs::write(
        &config,
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n[workspace]\nurl = \"https://x.example/scim/v2\"\ntoken = \"t\"\n[state]\npath = \"typo/state.db\"\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("typo")).unwrap();
    for args in [
        &["status"][..],
        &["report"],
        &["export", "access"],
        &["digest"],
        &["explain", "someone"],
        &["reject", "1"],
        &["approve", "1"],
        &["link", "00u1", "a1"],
    ] {
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = seatwarden(&all, &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("no state database at") && stderr.contains("state.path"),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("typo")).unwrap().count(),
            0,
            "{args:?} left a file behind"
        );
    }
}

/// `seatwarden status --format FORMAT` on `config`, which must exit 0.
fn status_output(config: &Path, format: &str) -> String {
    let out = seatwarden(
        &[
            "--config",
            config.to_str().unwrap(),
            "status",
            "--format",
            format,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// On-call asks `status` who keeps access by an exception: it said nothing of
/// `safety.exceptions` (only `check-config` listed them). It lists those in force,
/// soonest end first, with the time left and the reason, and apart from them those
/// ended and still in the file; `--format json` gives each with its end as an
/// instant and whether it has ended.
#[test]
fn status_lists_the_exceptions_in_force_and_those_ended() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seatwarden.toml");
    let now = chrono::Utc::now();
    let in_three_days = (now + chrono::Duration::days(3) + chrono::Duration::hours(1)).to_rfc3339();
    let in_ninety_minutes = (now + chrono::Duration::minutes(90)).to_rfc3339();
    std::fs::write(
        &config,
        format!(
            "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
             [workspace]\nurl = \"https://x.example/scim/v2\"\ntoken = \"t\"\n\
             [state]\npath = \"state.db\"\n\
             [report]\ntimezone = \"Europe/Berlin\"\n\
             [[safety.exceptions]]\nuser_name = \"dana@example.com\"\n\
             until = \"{in_three_days}\"\nreason = \"handover, HR-4711\"\n\
             [[safety.exceptions]]\nuser_name = \"gone@example.com\"\n\
             until = 2026-01-15\nreason = \"notice period\"\n\
             [[safety.exceptions]]\nuser_name = \"erin@example.com\"\n\
             until = \"{in_ninety_minutes}\"\nreason = \"legal hold\"\n"
        ),
    )
    .unwrap();
    seatwarden::store::Store::open(&dir.path().join("state.db")).unwrap();
    let text = status_output(&config, "text");
    let lines: Vec<&str> = text.lines().collect();
    let at = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in\n{text}"))
    };
    let in_force = at("Exceptions in force (safety.exceptions): 2, access kept until their end");
    assert!(
        lines[in_force + 1].starts_with("  erin@example.com until ")
            && lines[in_force + 1].ends_with(" min left: legal hold"),
        "soonest end first:\n{text}"
    );
    assert!(
        lines[in_force + 2].starts_with("  dana@example.com until ")
            && lines[in_force + 2].ends_with(", 3 days left: handover, HR-4711"),
        "{text}"
    );
    let ended = at("Exceptions ended, still in the configuration: 1 (");
    assert_eq!(
        lines[ended + 1],
        "  gone@example.com ended 2026-01-16 00:00 +01:00 (CET): notice period",
        "{text}"
    );

    let json: serde_json::Value = serde_json::from_str(&status_output(&config, "json")).unwrap();
    let exceptions = json["exceptions"].as_array().unwrap();
    let listed: Vec<(&str, bool)> = exceptions
        .iter()
        .map(|e| {
            (
                e["user_name"].as_str().unwrap(),
                e["ended"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("gone@example.com", true),
            ("erin@example.com", false),
            ("dana@example.com", false)
        ]
    );
    assert_eq!(exceptions[0]["until"], "2026-01-15T23:00:00Z");
    assert_eq!(exceptions[2]["reason"], "handover, HR-4711");
}

/// A reconcile whose process was killed stays recorded as running until the next
/// writing run closes it. `status` tells it from a live one by the writer lock,
/// which every live writer holds.
#[test]
fn status_tells_a_cut_off_reconcile_from_a_running_one() {
    use seatwarden::store::{RunKind, Store, WriterLock};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seatwarden.toml");
    std::fs::write(
        &config,
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n[workspace]\nurl = \"https://x.example/scim/v2\"\ntoken = \"t\"\n[state]\npath = \"state.db\"\n",
    )
    .unwrap();
    let database = dir.path().join("state.db");
    let run = Store::open(&database)
        .unwrap()
        .begin_run(RunKind::Reconcile, chrono::Utc::now())
        .unwrap();
    let status = |format: &str| status_output(&config, format);
    let writer = WriterLock::acquire_blocking(&database, |_| panic!("free")).unwrap();
    let live = status("text");
    assert!(
        live.contains(&format!("Last reconcile: run {run} running")),
        "{live}"
    );
    let json: serde_json::Value = serde_json::from_str(&status("json")).unwrap();
    assert_eq!(json["last_reconcile_cut_off"], false);
    drop(writer);
    let cut_off = status("text");
    assert!(
        cut_off.contains(&format!("Last reconcile: run {run} cut off")),
        "{cut_off}"
    );
    let json: serde_json::Value = serde_json::from_str(&status("json")).unwrap();
    assert_eq!(json["last_reconcile_cut_off"], true);
    assert_eq!(json["last_reconcile"]["status"], "running");
}

/// A job the daemon recorded as running stays so when the daemon is killed. `status`
/// tells a cut-off job from a running one by the daemon's instance lock, and shows
/// each scheduled job's next run (on the schedule's wall clock) only while a daemon
/// runs to start it.
#[test]
fn status_tells_a_cut_off_job_and_shows_next_runs_while_a_daemon_runs() {
    use chrono::{Timelike, Utc};
    use seatwarden::daemon::InstanceLock;
    use seatwarden::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seatwarden.toml");
    std::fs::write(
        &config,
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
         [workspace]\nurl = \"https://x.example/scim/v2\"\ntoken = \"t\"\n\
         [state]\npath = \"state.db\"\n\
         [schedule]\ntimezone = \"Asia/Kolkata\"\nreconcile = \"30 2 * * *\"\nsweep = \"*/5 * * * *\"\n",
    )
    .unwrap();
    let database = dir.path().join("state.db");
    Store::open(&database)
        .unwrap()
        .job_started("sweep", Utc::now() - chrono::Duration::hours(1))
        .unwrap();
    let status = |format: &str| status_output(&config, format);
    let job = |json: &serde_json::Value, name: &str| {
        json["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no job {name} in {json}"))
    };

    let stopped = status("text");
    assert!(
        stopped.contains("Daemon jobs (no daemon is running on this state database):"),
        "{stopped}"
    );
    let sweep_line = stopped.lines().find(|l| l.contains("sweep")).unwrap();
    assert!(
        sweep_line.contains("last run cut off: the daemon stopped before it finished (started ")
            && !sweep_line.contains("next"),
        "{stopped}"
    );
    let json: serde_json::Value = serde_json::from_str(&status("json")).unwrap();
    assert_eq!(json["daemon_running"], false);
    let sweep = job(&json, "sweep");
    assert_eq!(sweep["cut_off"], true, "{sweep}");
    assert_eq!(sweep["last_status"], "running", "{sweep}");
    assert!(sweep["next_run"].is_null(), "{sweep}");
    // Without a daemon too, every scheduled job is listed, run or not (the daily
    // prune waits for its slot), with no next run: no daemon runs them. The digest
    // is not scheduled: there is no [report.email] to send it to.
    let names: Vec<&str> = json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["reconcile", "sweep", "retry", "prune", "mail"],
        "{json}"
    );
    let prune = job(&json, "prune");
    assert!(
        prune["last_status"].is_null() && prune["next_run"].is_null(),
        "{prune}"
    );
    assert!(
        stopped.lines().any(|l| l == "  prune      never run"),
        "{stopped}"
    );

    // A breaker opened a minute ago by a run's failing writes.
    Store::open(&database)
        .unwrap()
        .set_circuit(&seatwarden::circuit::CircuitRecord {
            opened_at: Some(Utc::now() - chrono::Duration::minutes(1)),
            reason: Some("16 of the last 20 writes failed".into()),
            failures: Vec::new(),
        })
        .unwrap();
    let daemon = InstanceLock::acquire(&database).unwrap();
    let before = Utc::now();
    let running = status("text");
    assert!(
        running.contains("Daemon jobs (the daemon is running):"),
        "{running}"
    );
    let sweep_line = running.lines().find(|l| l.contains("sweep")).unwrap();
    assert!(
        sweep_line.contains("last run running (started ")
            && sweep_line.contains(", not finished yet); ")
            && sweep_line.contains("; next "),
        "{running}"
    );
    assert!(
        running
            .lines()
            .any(|l| l.starts_with("  reconcile  never run; next ") && l.ends_with(" +05:30 (IST)")),
        "{running}"
    );
    assert!(
        running.contains("Circuit breaker: OPEN since ")
            && running.contains(" (16 of the last 20 writes failed): no run writes"),
        "{running}"
    );
    let json: serde_json::Value = serde_json::from_str(&status("json")).unwrap();
    assert_eq!(json["daemon_running"], true);
    assert_eq!(json["circuit"]["state"], "open", "{json}");
    let sweep = job(&json, "sweep");
    assert_eq!(sweep["cut_off"], false, "{sweep}");
    let next: chrono::DateTime<Utc> = serde_json::from_value(sweep["next_run"].clone()).unwrap();
    assert!(
        next > before && next - before <= chrono::Duration::minutes(5),
        "{sweep}"
    );
    // Kolkata is UTC+5:30: a five-minute slot there is one in UTC too.
    assert_eq!((next.minute() % 5, next.second()), (0, 0), "{sweep}");
    // Never run, still listed, with its next run at 02:30 Kolkata = 21:00 UTC.
    let reconcile = job(&json, "reconcile");
    assert!(reconcile["last_status"].is_null(), "{reconcile}");
    let next: chrono::DateTime<Utc> =
        serde_json::from_value(reconcile["next_run"].clone()).unwrap();
    assert_eq!((next.hour(), next.minute()), (21, 0), "{reconcile}");
    assert!(
        reconcile["next_run_local"]
            .as_str()
            .is_some_and(|at| at.ends_with("02:30 +05:30 (IST)")),
        "{reconcile}"
    );
    drop(daemon);
}

/// Under systemd (stderr is the stream `JOURNAL_STREAM` names) every log line
/// carries its syslog priority for journald, so `journalctl -p warning` finds the
/// warnings and the fatal error; anywhere else the lines are left as they are.
/// A schedule with a seconds field shows its next run to the second: to the
/// minute, `*/20 * * * * *` would show three runs a minute at one time.
#[test]
fn status_shows_the_next_run_of_a_schedule_with_seconds_to_the_second() {
    use seatwarden::daemon::InstanceLock;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seatwarden.toml");
    std::fs::write(
        &config,
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
         [workspace]\nurl = \"https://x.example/scim/v2\"\ntoken = \"t\"\n\
         [state]\npath = \"state.db\"\n\
         [schedule]\ntimezone = \"Asia/Kolkata\"\nreconcile = \"30 2 * * *\"\n\
         sweep = \"*/20 * * * * *\"\n",
    )
    .unwrap();
    let database = dir.path().join("state.db");
    seatwarden::store::Store::open(&database).unwrap();
    let _daemon = InstanceLock::acquire(&database).unwrap();
    let status = status_output(&config, "text");
    let next = |job: &str| {
        let line = status
            .lines()
            .find(|l| l.trim_start().starts_with(job))
            .unwrap_or_else(|| panic!("no {job} in {status}"));
        let at = line
            .split(", next ")
            .nth(1)
            .or_else(|| line.split(" next ").nth(1));
        at.unwrap_or_else(|| panic!("no next run in {line}"))
            .to_owned()
    };
    // `2026-12-03 08:00:20 +05:30 (IST)` and `2026-12-04 02:30 +05:30 (IST)`.
    let shape = |at: &str| at.split([' ', ':']).count();
    let sweep = next("sweep");
    assert_eq!(shape(&sweep), 7, "{sweep}");
    assert!(sweep.ends_with(" +05:30 (IST)"), "{sweep}");
    let reconcile = next("reconcile");
    assert_eq!(shape(&reconcile), 6, "{reconcile}");
}

#[test]
fn log_lines_carry_journald_priorities_only_on_the_journal_stream() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seatwarden.toml");
    // A cleartext relay off loopback: a warning at load. No database: a fatal error.
    std::fs::write(
        &config,
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
         [workspace]\nurl = \"https://x.example/scim/v2\"\ntoken = \"t\"\n\
         [state]\npath = \"state.db\"\n\
         [report.email]\nsmtp_url = \"smtp://relay.example:25\"\nfrom = \"sw@example.com\"\n\
         to = [\"a@example.com\"]\n",
    )
    .unwrap();
    let run = |format: &str, journal: bool| {
        let log = dir.path().join(format!("stderr-{format}-{journal}"));
        let file = std::fs::File::create(&log).unwrap();
        let meta = file.metadata().unwrap();
        let stream = if journal {
            format!("{}:{}", meta.dev(), meta.ino())
        } else {
            format!("{}:{}", meta.dev(), meta.ino() + 1)
        };
        let status = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "--log-format",
                format,
                "status",
            ])
            .env_remove("RUST_LOG")
            .env("JOURNAL_STREAM", stream)
            .stderr(file)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(1));
        std::fs::read_to_string(&log).unwrap()
    };
    let journal = run("text", true);
    let lines: Vec<&str> = journal.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<4>") && l.contains("report.email.smtp_url")),
        "{journal}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<3>error: ") && l.contains("no state database")),
        "{journal}"
    );
    let json = run("json", true);
    let errors: Vec<serde_json::Value> = json
        .lines()
        .filter_map(|l| l.strip_prefix("<3>"))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        errors.iter().any(|e| e["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no state database"))),
        "the fatal error is in the JSON stream: {json}"
    );
    let elsewhere = run("text", false);
    assert!(elsewhere.contains("no state database"), "{elsewhere}");
    assert!(
        !elsewhere.contains("<3>") && !elsewhere.contains("<4>"),
        "{elsewhere}"
    );
}

/// A plain `http://` connection (accepted without `allow_cleartext` only to
/// loopback, where the token stays on the machine) never goes through a proxy
/// from the environment: through one, the bearer token would cross the network in
/// cleartext. The proxy variables are set for the child process only.
#[tokio::test(flavor = "multi_thread")]
async fn plain_http_connections_ignore_proxy_variables() {
    use std::time::Duration;
    use wiremock::matchers::any;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let proxy = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(502))
        .mount(&proxy)
        .await;
    let server = MockServer::start().await;
    // Both sides answer late: they are read at once, and the first refusal ends the
    // command, so an early answer from one could end it before the other's first
    // request has left (on a loaded machine).
    async fn answer_401(server: &MockServer) {
        Mock::given(any())
            .respond_with(ResponseTemplate::new(401).set_delay(Duration::from_secs(2)))
            .mount(server)
            .await;
    }
    answer_401(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example/directory.json");
    std::fs::copy(&example, dir.path().join("directory.json")).unwrap();
    let workspace = format!(
        "[workspace]\nurl = \"{}/scim/v2\"\ntoken = \"proxy-test-token\"\n\n\
         [state]\npath = \"state.db\"\n",
        server.uri()
    );
    let directories = [
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\n".to_owned(),
        format!(
            "[directory]\nkind = \"okta\"\nurl = \"{}\"\ntoken = \"okta-token\"\n",
            server.uri()
        ),
        format!(
            "[directory]\nkind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\n\
             client_secret = \"entra-secret\"\ngraph_url = \"{0}\"\nlogin_url = \"{0}\"\n",
            server.uri()
        ),
    ];
    for (i, directory) in directories.iter().enumerate() {
        let config = dir.path().join(format!("seatwarden-{i}.toml"));
        std::fs::write(&config, format!("{directory}\n{workspace}")).unwrap();
        let proxy_url = proxy.uri();
        let output = tokio::task::spawn_blocking(move || {
            let mut command = Command::new(env!("CARGO_BIN_EXE_seatwarden"));
            command
                .args(["--config", config.to_str().unwrap(), "plan"])
                .env_remove("SEATWARDEN_CONFIG");
            for (key, _) in std::env::vars() {
                if key.starts_with("SEATWARDEN__") || key.eq_ignore_ascii_case("no_proxy") {
                    command.env_remove(key);
                }
            }
            for key in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
                command.env(key, &proxy_url);
            }
            command.output().unwrap()
        })
        .await
        .unwrap();
        let stderr = text(&output.stderr);
        let through_proxy = proxy.received_requests().await.unwrap();
        assert!(
            through_proxy.is_empty(),
            "{directory}: the proxy received {:?}; stderr: {stderr}",
            through_proxy
                .iter()
                .map(|r| r.url.to_string())
                .collect::<Vec<_>>()
        );
        let direct = server.received_requests().await.unwrap();
        assert!(
            direct.iter().any(|r| r.url.path().starts_with("/scim/")),
            "{directory}: the workspace was not reached directly; stderr: {stderr}"
        );
        if i == 1 {
            assert!(
                direct.iter().any(|r| r.url.path().starts_with("/api/v1/")),
                "the Okta directory was not reached directly; stderr: {stderr}"
            );
        }
        if i == 2 {
            assert!(
                direct
                    .iter()
                    .any(|r| r.url.path().ends_with("/oauth2/v2.0/token")),
                "the Entra login was not reached directly; stderr: {stderr}"
            );
        }
        server.reset().await;
        answer_401(&server).await;
    }
}

/// `check-config` says what it accepts but warns about: plain `smtp://` to a
/// remote relay carries leavers' names unencrypted.
#[test]
fn check_config_warns_about_plain_smtp_to_a_remote_relay() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example/directory.json");
    std::fs::copy(&example, dir.path().join("directory.json")).unwrap();
    let check = |url: &str| {
        let config = dir.path().join("seatwarden.toml");
        std::fs::write(
            &config,
            format!(
                "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
                 [workspace]\nurl = \"https://scim.example.com/scim/v2\"\ntoken = \"t\"\n\n\
                 [report.email]\nsmtp_url = \"{url}\"\nfrom = \"sw@example.com\"\n\
                 to = [\"a@example.com\"]\n"
            ),
        )
        .unwrap();
        // Owner-only: an inline token in a file others can read is a warning too.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = seatwarden(&["--config", config.to_str().unwrap(), "check-config"], &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    let stderr = check("smtp://mail.example.com:25");
    assert!(
        stderr.contains("warning: report.email.smtp_url:")
            && stderr.contains("unencrypted to mail.example.com")
            && stderr.contains("smtps://"),
        "{stderr}"
    );
    for url in ["smtp://localhost:25", "smtps://mail.example.com"] {
        let stderr = check(url);
        assert!(!stderr.contains("warning"), "{url}: {stderr}");
        assert!(stderr.contains("configuration OK"), "{stderr}");
    }
}

/// A config whose state database is `state.db` in `dir` (not created).
fn state_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("seatwarden.toml");
    std::fs::write(
        &config,
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n[workspace]\nurl = \"https://x.example/scim/v2\"\ntoken = \"t\"\n[state]\npath = \"state.db\"\n",
    )
    .unwrap();
    config
}

fn stored_report(run_id: i64, mode: &str) -> seatwarden::report::Report {
    let at = chrono::Utc::now();
    seatwarden::report::Report {
        schema_version: seatwarden::report::SCHEMA_VERSION,
        run_id,
        mode: mode.to_owned(),
        started_at: at,
        finished_at: at,
        directory: "file d.json".to_owned(),
        workspace: "https://x.example/scim/v2".to_owned(),
        summary: seatwarden::report::Summary::default(),
        drift: Vec::new(),
        actions: Vec::new(),
        safety: seatwarden::report::SafetyReport::default(),
    }
}

/// `report` without `--run` shows the newest run that has a report, while a newer
/// one is still running (a reconcile under way), failed (a `plan` that could not
/// read the workspace) or was cut off (Ctrl-C), and says so on stderr; a cron job
/// reading the latest report does not fail meanwhile. `--run N` of a run without
/// a report still fails.
#[test]
fn report_shows_the_newest_run_with_a_report() {
    use seatwarden::store::{RunKind, RunStatus, Store};
    let dir = tempfile::tempdir().unwrap();
    let config = state_config(dir.path());
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    let now = chrono::Utc::now();
    let done = store.begin_run(RunKind::Reconcile, now).unwrap();
    store
        .save_report(done, &stored_report(done, "reconcile").to_json())
        .unwrap();
    store
        .finish_run(done, now, RunStatus::Succeeded, None)
        .unwrap();
    let failed = store.begin_run(RunKind::Plan, now).unwrap();
    store
        .finish_run(failed, now, RunStatus::Failed, Some("GET /Users: HTTP 503"))
        .unwrap();
    let running = store.begin_run(RunKind::Reconcile, now).unwrap();
    drop(store);
    let config = config.to_str().unwrap();

    let out = seatwarden(&["--config", config, "report", "--format", "json"], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["run_id"], done);
    assert!(
        stderr.contains(&format!("showing run {done}"))
            && stderr.contains(&format!("run {running} (reconcile) was cut off")),
        "{stderr}"
    );
    // While a writer holds the lock, the reconcile is under way.
    let writer =
        seatwarden::store::WriterLock::acquire_blocking(&dir.path().join("state.db"), |_| {
            panic!("free")
        })
        .unwrap();
    let out = seatwarden(&["--config", config, "report"], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("run {running} (reconcile) is still running")),
        "{stderr}"
    );
    drop(writer);

    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    store
        .finish_run(running, now, RunStatus::Failed, Some("interrupted"))
        .unwrap();
    drop(store);
    let out = seatwarden(&["--config", config, "report"], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("failed: interrupted"), "{stderr}");

    for run in [failed, running] {
        let run = run.to_string();
        let out = seatwarden(&["--config", config, "report", "--run", &run], &[]);
        assert_eq!(out.status.code(), Some(1), "--run {run}");
        assert!(out.stdout.is_empty());
    }
}

/// `report --run` of a reconcile recorded as running tells a live one from one
/// cut off (`kill -9`) by the writer lock, as `status` does; of a sweep, which
/// stores no report, it says what the sweep wrote and how to approve what it held.
#[test]
fn report_of_a_run_without_a_report_says_what_became_of_it() {
    use seatwarden::model::{Action, ActionKind, DriftKind, HoldReason, Plan};
    use seatwarden::store::{RunKind, RunStatus, Store, WriterLock};
    let dir = tempfile::tempdir().unwrap();
    let config = state_config(dir.path());
    let config = config.to_str().unwrap();
    let database = dir.path().join("state.db");
    let mut store = Store::open(&database).unwrap();
    let now = chrono::Utc::now();
    let reconcile = store.begin_run(RunKind::Reconcile, now).unwrap();
    let sweep = store.begin_run(RunKind::Sweep, now).unwrap();
    let deactivate = |seq: u32, held: Option<HoldReason>| Action {
        seq,
        kind: ActionKind::Deactivate {
            account_id: format!("a{seq}"),
        },
        reason: DriftKind::StaleAccess,
        subject: format!("user{seq}@example.com"),
        identity_id: Some(format!("00u{seq}")),
        detail: "identity is deprovisioned in the directory".into(),
        held,
    };
    let plan = Plan {
        actions: vec![
            deactivate(0, None),
            deactivate(1, None),
            deactivate(2, Some(HoldReason::LastOwner)),
        ],
        drift: vec![],
        new_links: vec![],
        retained: vec![],
        disputed_leavers: vec![],
        protected_by_person: vec![],
        excepted: vec![],
        protected_leavers: vec![],
        disputed_candidates: vec![],
    };
    store.save_plan(sweep, &plan, now).unwrap();
    store.mark_in_flight(sweep, 0, now).unwrap();
    store.mark_applied(sweep, 0, now, None).unwrap();
    store.mark_in_flight(sweep, 1, now).unwrap();
    store.mark_failed(sweep, 1, now, "HTTP 503").unwrap();
    store
        .finish_run(sweep, now, RunStatus::Succeeded, None)
        .unwrap();
    drop(store);
    let report = |run: i64| {
        let out = seatwarden(
            &["--config", config, "report", "--run", &run.to_string()],
            &[],
        );
        assert_eq!(out.status.code(), Some(1), "--run {run}");
        assert!(out.stdout.is_empty());
        text(&out.stderr)
    };

    let writer = WriterLock::acquire_blocking(&database, |_| panic!("free")).unwrap();
    let live = report(reconcile);
    assert!(
        live.contains(&format!(
            "run {reconcile} (reconcile) is still running (started "
        )),
        "{live}"
    );
    drop(writer);
    let cut_off = report(reconcile);
    assert!(
        cut_off.contains(&format!(
            "run {reconcile} (reconcile) was cut off: the process stopped before it finished"
        )) && cut_off.contains("it has no report")
            && !cut_off.contains("still running"),
        "{cut_off}"
    );

    let swept = report(sweep);
    assert!(
        swept.contains(&format!("run {sweep} (sweep) succeeded at "))
            && swept.contains("a sweep stores no report")
            && swept.contains("Its writes: 1 applied, 1 failed, 1 held for a human.")
            && swept.contains(&format!("then `seatwarden approve {sweep}`")),
        "{swept}"
    );
}

/// Every value the command line cannot parse is a usage error (64) naming the
/// flag, as an unknown flag is, before any configuration or database is read.
#[test]
fn bad_flag_values_are_usage_errors() {
    for (args, needle) in [
        (&["report", "--run", "abc"][..], "--run"),
        (&["report", "--run", "0"], "--run"),
        (&["approve", "9", "--only", "bogus"], "--only"),
        (&["reject", "9", "--only", "bogus"], "--only"),
        (&["digest", "--period", "2x"], "--period"),
    ] {
        let out = seatwarden(args, &[]);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(i32::from(seatwarden::cli::exit::USAGE)),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// The README names each latency flag with its command: `--latency MS` belongs to
/// the e2e benchmark, `--latency-ms MS` to `seatwarden sandbox`; a bare
/// `--latency 20` sends a reader to the sandbox with a flag it refuses.
#[test]
fn the_readme_names_the_latency_flag_of_its_command() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let spans: Vec<&str> = readme.split('`').skip(1).step_by(2).collect();
    for span in &spans {
        if span.contains("--latency ") {
            assert!(span.contains("cargo bench --bench e2e"), "`{span}`");
        }
    }
    let help = text(&seatwarden(&["sandbox", "--help"], &[]).stdout);
    assert!(help.contains("--latency-ms"), "{help}");
    assert!(!help.contains("--latency "), "{help}");
    assert!(
        spans
            .iter()
            .any(|s| s.starts_with("seatwarden sandbox --latency-ms")),
        "the README shows the sandbox's flag too"
    );
}

/// A listener answering every request as the daemon's `/healthz` does.
fn healthy_listener() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            // The whole request is read first: closing with unread bytes would
            // reset the connection before the answer is read.
            let mut request = Vec::new();
            let mut chunk = [0_u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        }
    });
    port
}

/// The healthcheck reports the daemon's health, not the file's: a configuration
/// file broken on disk (which a reload refuses, so the daemon keeps running on the
/// one it loaded) does not make it fail, wherever the address comes from.
#[test]
fn healthcheck_does_not_depend_on_a_valid_configuration_file() {
    let port = healthy_listener();
    let listen = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seatwarden.toml");
    let check = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["--config", config.to_str().unwrap(), "healthcheck"];
        all.extend_from_slice(args);
        let out = seatwarden(&all, env);
        (out.status.code(), text(&out.stderr))
    };

    // Not TOML at all: the address comes from the flag or the daemon's variable.
    std::fs::write(&config, "[workspace\nurl = ").unwrap();
    let (code, stderr) = check(&["--listen", &listen], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        check(&[], &[("SEATWARDEN__HTTP__LISTEN", &listen)]).0,
        Some(0)
    );
    // The flag wins over the variable.
    assert_eq!(
        check(
            &["--listen", &listen],
            &[("SEATWARDEN__HTTP__LISTEN", "127.0.0.1:1")]
        )
        .0,
        Some(0)
    );

    // [http] listen is read alone, from a file broken elsewhere.
    std::fs::write(
        &config,
        format!("[workspace\nurl = \n\n[http]\nlisten = \"{listen}\"\n"),
    )
    .unwrap();
    assert_eq!(check(&[], &[]), (Some(0), String::new()));
    // Valid TOML, invalid configuration (no workspace, an unknown key).
    std::fs::write(
        &config,
        format!("nonsense = 1\n[http]\nlisten = \"{listen}\"\n"),
    )
    .unwrap();
    assert_eq!(check(&[], &[]), (Some(0), String::new()));

    // Still a check: nothing listening is unhealthy (exit 1), and says where.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let (code, stderr) = check(&["--listen", &closed], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&closed), "{stderr}");
    let (code, stderr) = check(&[], &[("SEATWARDEN__HTTP__LISTEN", "nowhere")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("SEATWARDEN__HTTP__LISTEN"), "{stderr}");

    let help = text(&seatwarden(&["healthcheck", "--help"], &[]).stdout);
    for needle in ["--listen", "SEATWARDEN__HTTP__LISTEN", "[http] listen"] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}

/// A daemon that accepts connections but never answers (hung) is unhealthy, and
/// the healthcheck says it gave no answer, not an errno's text.
#[test]
fn healthcheck_of_a_daemon_that_never_answers_says_so() {
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = hung.local_addr().unwrap().to_string();
    let out = seatwarden(&["healthcheck", "--listen", &listen], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!("unhealthy: http://{listen}/healthz gave no answer within 3 s")
    );
    drop(hung);
}

/// `status` words a held deprovision as the digest does, with the command that
/// releases it, and the reason the person lost access in words; its JSON keeps
/// the machine-readable values (`hold`, `reason`) beside the recorded `held`.
#[test]
fn status_says_what_holds_a_deprovision_and_what_releases_it() {
    use seatwarden::sla::{self, Leaver, LossReason};
    use seatwarden::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seatwarden.toml");
    std::fs::write(
        &config,
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
         [workspace]\nurl = \"https://x.example/scim/v2\"\ntoken = \"t\"\n\
         [state]\npath = \"state.db\"\n\
         [report]\nadmin_command = \"sudo seatwarden-admin\"\n",
    )
    .unwrap();
    let now = chrono::Utc::now();
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    let leaver = |n: u32, reason| Leaver {
        identity_id: format!("00u{n}"),
        account_id: Some(format!("acc-{n}")),
        user_name: format!("leaver{n}@example.com"),
        reason,
    };
    let changes = sla::observe(
        &[],
        &[
            leaver(1, LossReason::OutOfScope),
            leaver(2, LossReason::Suspended),
        ],
        &[],
        now,
        chrono::Duration::hours(8),
    );
    store.update_ledger(&changes, now).unwrap();
    for entry in store.open_deprovisions().unwrap() {
        let why = match entry.identity_id.as_str() {
            "00u1" => format!(
                "{} which workspace account is theirs is unclear (active: acc-1, acc-9)",
                seatwarden::sweep::DISPUTED_HOLD
            ),
            _ => "31 deprovisions planned, the per-run limit is 25".to_owned(),
        };
        store
            .deprovision_held(entry.id, &why, now + chrono::Duration::minutes(15))
            .unwrap();
    }
    drop(store);

    let text = status_output(&config, "text");
    assert!(
        text.contains("leaver1@example.com  due ",)
            && text.contains(
                "(no longer in a scope group); held: disputed match, waiting for \
             `sudo seatwarden-admin link 00u1 ACCOUNT` (which workspace account is theirs is \
             unclear (active: acc-1, acc-9))"
            ),
        "{text}"
    );
    assert!(
        text.contains(
            "(suspended in the directory); held by the guard, waiting for \
             `sudo seatwarden-admin approve RUN` of the run holding it (31 deprovisions \
             planned, the per-run limit is 25)"
        ),
        "{text}"
    );
    assert!(!text.contains("out_of_scope"), "{text}");

    let json: serde_json::Value = serde_json::from_str(&status_output(&config, "json")).unwrap();
    let open = json["deprovisions"]["open"].as_array().unwrap();
    let person = |id: &str| {
        open.iter()
            .find(|l| l["identity_id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {json}"))
    };
    assert_eq!(person("00u1")["reason"], "out_of_scope");
    assert_eq!(person("00u1")["hold"], "disputed_match");
    assert!(
        person("00u1")["held"]
            .as_str()
            .unwrap()
            .starts_with(seatwarden::sweep::DISPUTED_HOLD)
    );
    assert_eq!(person("00u2")["reason"], "suspended");
    assert_eq!(person("00u2")["hold"], "guard");
}

/// A reconcile whose process was killed: `status` and `report --run` call it the
/// same thing, by the same rule (`Store::run_and_whether_cut_off`).
#[test]
fn status_and_report_run_call_a_killed_reconcile_the_same_thing() {
    use seatwarden::store::{RunKind, Store};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seatwarden.toml");
    std::fs::write(
        &config,
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n[workspace]\nurl = \"https://x.example/scim/v2\"\ntoken = \"t\"\n[state]\npath = \"state.db\"\n",
    )
    .unwrap();
    let run = Store::open(&dir.path().join("state.db"))
        .unwrap()
        .begin_run(RunKind::Reconcile, chrono::Utc::now())
        .unwrap();
    let status = status_output(&config, "text");
    assert!(
        status.contains(&format!("Last reconcile: run {run} cut off (")),
        "{status}"
    );
    let out = seatwarden(
        &[
            "--config",
            config.to_str().unwrap(),
            "report",
            "--run",
            &run.to_string(),
        ],
        &[],
    );
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        said.contains(&format!(
            "run {run} (reconcile) was cut off: the process stopped before it finished"
        )),
        "{said}"
    );
}

/// `demo` and `sandbox` never read a configuration: one named on their command
/// line is refused as a usage error saying what they do instead, rather than
/// ignored while the person believes their configuration was used. The variable,
/// set for the other commands, is not refused.
#[test]
fn demo_and_sandbox_refuse_a_config_named_on_their_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let demo_dir = demo_dir.to_str().unwrap();
    for args in [
        &["--config", "mine.toml", "demo", "--dir", demo_dir][..],
        &["demo", "--dir", demo_dir, "-c", "mine.toml"][..],
    ] {
        let out = seatwarden(args, &[]);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("`demo` runs its own embedded example and does not read --config")
                && stderr.contains(&format!("{demo_dir}/seatwarden.toml")),
            "{stderr}"
        );
        assert!(!Path::new(demo_dir).exists(), "nothing run: {args:?}");
    }
    let out = seatwarden(&["sandbox", "--port", "0", "--config", "mine.toml"], &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("`sandbox` serves a workspace and does not read --config"),
        "{}",
        text(&out.stderr)
    );

    let out = seatwarden(
        &["demo", "--dir", demo_dir],
        &[("SEATWARDEN_CONFIG", "mine.toml")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
