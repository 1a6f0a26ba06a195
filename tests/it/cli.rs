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
    assert!(!text(&out.stderr).contains("very-secret-token"));
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
    assert!(
        text(&out.stderr).contains("missing.json"),
        "{}",
        text(&out.stderr)
    );
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
