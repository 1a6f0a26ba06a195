//! Session 59, second reading of what session 59 merged.
//!
//! - A `safety.distinct_groups` entry that is a protected group spelt with a
//!   space at its end ("IT Admins ") was said to differ "from no configured
//!   group … only in spaces, quotes or characters that do not show", though it
//!   differs from "IT Admins" in exactly that: protected groups are compared
//!   trimmed (5c824fb), so it is the protected group itself, its members
//!   protected whatever the declaration says. The warning now says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::config::Config;

/// The warnings about `safety.distinct_groups` of a configuration with
/// `protected_groups` and `distinct_groups` (TOML arrays), and the file's path.
fn distinct_warnings(protected: &str, distinct: &str) -> (Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("directory.json"), "{\"users\": []}").unwrap();
    let path = dir.path().join("seatwarden.toml");
    std::fs::write(
        &path,
        format!(
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
             [workspace]\nurl = \"https://workspace.example/scim/v2\"\ntoken = \"t\"\n\
             [safety]\nprotected_groups = {protected}\ndistinct_groups = {distinct}\n"
        ),
    )
    .unwrap();
    let config = Config::load_with_env(&path, Some(Default::default())).unwrap();
    let warnings = config
        .warnings()
        .into_iter()
        .filter(|w| w.contains("distinct_groups"))
        .collect();
    (warnings, path.display().to_string())
}

/// "IT Admins " (and "IT Admins" with a no-break space at its end) declared
/// distinct while "IT Admins" is protected: the warning says it is that
/// protected group, compared without the spaces at its ends, and that its
/// members stay protected; not that it differs from no configured group.
/// An entry like nothing configured keeps the old words.
#[test]
fn a_distinct_entry_that_is_a_protected_group_spelt_with_spaces_says_so() {
    for entry in ["\"IT Admins \"", "\"IT Admins\\u00A0\""] {
        let (warnings, path) = distinct_warnings("[\"IT Admins\"]", &format!("[{entry}]"));
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        let warning = &warnings[0];
        for part in [
            "safety.distinct_groups[0] = \"IT Admins",
            "is the protected group \"IT Admins\" (safety.protected_groups)",
            "compared without the spaces at their ends",
            "its members stay protected",
            "remove it",
            path.as_str(),
        ] {
            assert!(warning.contains(part), "{part:?} not in {warning}");
        }
        assert!(
            !warning.contains("differs from no configured group"),
            "{warning}"
        );
    }
    let (warnings, _) = distinct_warnings("[\"IT Admins\"]", "[\"Sales\"]");
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("differs from no configured group"),
        "{}",
        warnings[0]
    );
}
