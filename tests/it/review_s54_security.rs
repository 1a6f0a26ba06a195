//! Session 54: security review. What reaches the log is one line per event, so
//! text from the directory, the workspace or a configuration file cannot forge a
//! line, nor, under systemd, the priority journald records it at.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

/// A command that fails under systemd (stderr is the stream `JOURNAL_STREAM`
/// names) writes its error as one journal line at error priority, even when the
/// error runs over several lines (a configuration error quoting the file's line,
/// a provider's message with line breaks in it): each line after the first was
/// an entry of its own at the stream's default priority (info), out of
/// `journalctl -p err`, and a `<N>` at the start of one set its priority.
#[test]
fn a_failing_commands_error_is_one_journal_line_at_error_priority() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seatwarden.toml");
    std::fs::write(
        &config,
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
         [workspace]\nurl = \"https://x.example/scim/v2\"\ntoken = \"t\"\n\
         [state]\npath = = \"state.db\"\n",
    )
    .unwrap();
    let log = dir.path().join("stderr");
    let file = std::fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["--config", config.to_str().unwrap(), "status"])
        .env_remove("RUST_LOG")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(file)
        .status()
        .unwrap();
    assert_ne!(status.code(), Some(0));
    let journal = std::fs::read_to_string(&log).unwrap();
    let error: Vec<&str> = journal
        .lines()
        .skip_while(|line| !line.starts_with("<3>error: "))
        .collect();
    assert_eq!(error.len(), 1, "{journal}");
    // The error's own line breaks, written as `\n`: it is all there.
    assert!(error[0].contains("\\n"), "{journal}");
    assert!(error[0].contains("state.db"), "{journal}");
}
