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

/// An LDAP filter nesting its parentheses thousands deep (a generated filter
/// gone wrong) is refused at load, naming the key and the file. ldap3 parses a
/// filter a stack frame or more per level: such a filter overflowed the stack of
/// the daemon's worker thread at its first search, and `check-config`'s own
/// parse of it, an abort no error handling catches; a few dozen levels are
/// refused before anything parses them.
#[test]
fn an_ldap_filter_nested_thousands_deep_is_refused_instead_of_overflowing_the_stack() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "bind-secret\n").unwrap();
    let path = dir.path().join("seatwarden.toml");
    let write = |filter: &str| {
        std::fs::write(
            &path,
            format!(
                "[directory]\nkind = \"ldap\"\nurl = \"ldaps://dc1.example.com\"\n\
                 bind_dn = \"cn=svc,dc=example,dc=com\"\nbind_password_file = \"pw\"\n\
                 base_dn = \"dc=example,dc=com\"\nuser_filter = \"{filter}\"\n\n\
                 [workspace]\nurl = \"https://workspace.example/scim/v2\"\ntoken = \"t0ken\"\n\n\
                 [state]\npath = \"state.db\"\n"
            ),
        )
        .unwrap();
    };
    let nested = |depth: usize| {
        format!(
            "{}(objectClass=user){}",
            "(&".repeat(depth),
            ")".repeat(depth)
        )
    };
    for depth in [100, 50_000] {
        write(&nested(depth));
        let (ok, _, err) = seatwarden(&path, &["check-config"]);
        assert!(!ok, "depth {depth}");
        assert!(!err.contains("overflow"), "depth {depth}: {err}");
        assert!(
            err.contains(&format!(
                "{}: key `directory.user_filter`: nests parentheses {} deep; an LDAP filter \
                 may nest at most 64",
                path.display(),
                depth + 1
            )),
            "depth {depth}: {err}"
        );
    }
    // Nested as real filters are, it is taken.
    write(
        "(&(objectClass=user)(|(department=Sales)(!(userAccountControl:1.2.840.113556.1.4.803:=2))))",
    );
    let (ok, _, err) = seatwarden(&path, &["check-config"]);
    assert!(ok, "{err}");
}
