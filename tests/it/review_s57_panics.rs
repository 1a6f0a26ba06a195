//! Session 57: a panic audit. Operations that panic without `unwrap`, `expect`
//! or `panic!` in them (overflowing arithmetic, slicing, date arithmetic), fed
//! what an operator or a provider controls.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::qa_cli::seatwarden;

/// A schedule whose time fields repeat their ranges (`0-59,0-59,…`, as a
/// generated configuration may write them) is loaded: counting its times of
/// day multiplied the fields' list lengths, repeats included, and past 2^64
/// `check-config` (and every command, the daemon too) died of "attempt to
/// multiply with overflow" while loading the configuration.
#[test]
fn a_schedule_repeating_its_ranges_loads_instead_of_overflowing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("directory.json"),
        serde_json::json!({ "users": [{
            "id": "u1", "userName": "ada@example.com", "email": "ada@example.com",
            "status": "active", "groups": []
        }] })
        .to_string(),
    )
    .unwrap();
    let seconds = vec!["0-59"; 70_000].join(",");
    let hours = vec!["0-23"; 70_000].join(",");
    let path = dir.path().join("seatwarden.toml");
    std::fs::write(
        &path,
        format!(
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
             [workspace]\nurl = \"https://workspace.example/scim/v2\"\ntoken = \"t0ken\"\n\n\
             [state]\npath = \"state.db\"\n\n\
             [schedule]\nreconcile = \"{seconds} {seconds} {hours} * * *\"\n"
        ),
    )
    .unwrap();
    let (ok, _, err) = seatwarden(&path, &["check-config"]);
    // The warnings quote the pattern (a megabyte): the end says what happened.
    let end: String = err
        .chars()
        .rev()
        .take(2000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(!err.contains("panicked"), "{end}");
    assert!(ok, "{end}");
    assert!(err.contains("configuration OK"), "{end}");
}
