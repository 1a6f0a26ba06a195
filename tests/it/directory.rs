//! The directory file source: JSON and CSV exports, and the errors that reject them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use seatwarden::directory::file::{parse_csv, parse_json};
use seatwarden::directory::{Directory, DirectoryError, FileSource};
use seatwarden::model::{DirectorySnapshot, Identity, IdentityStatus};
use seatwarden::retry::Transient;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/directory")
        .join(name)
}

fn read(name: &str) -> Result<DirectorySnapshot, DirectoryError> {
    FileSource::new(fixture(name)).read()
}

fn read_err(name: &str) -> DirectoryError {
    match read(name) {
        Ok(snapshot) => panic!("{name} should be rejected, got {snapshot:?}"),
        Err(error) => error,
    }
}

/// The people in `people.json` and `people.csv`, after trimming and clean-up.
fn expected_people() -> Vec<Identity> {
    vec![
        Identity {
            id: "u1".into(),
            user_name: "ada@example.com".into(),
            email: Some("ada@example.com".into()),
            given_name: Some("Ada".into()),
            family_name: Some("Lovelace".into()),
            display_name: Some("Lovelace, Ada".into()),
            status: IdentityStatus::Active,
            department: Some("Research".into()),
            groups: vec!["Engineering".into(), "Taskade Users".into()],
        },
        Identity {
            id: "u2".into(),
            user_name: "Grace.Hopper@example.com".into(),
            email: None,
            given_name: Some("Grace".into()),
            family_name: Some("Hopper".into()),
            display_name: Some("Grace \"Amazing\" Hopper".into()),
            status: IdentityStatus::Suspended,
            department: Some("Navy, Systems".into()),
            groups: vec!["Ops".into(), "Taskade Users".into()],
        },
        Identity {
            id: "u3".into(),
            user_name: "alan@example.com".into(),
            email: None,
            given_name: None,
            family_name: None,
            display_name: None,
            status: IdentityStatus::Deprovisioned,
            department: None,
            groups: vec![],
        },
    ]
}

#[test]
fn json_export_is_read_trimmed_and_complete() {
    let snapshot = read("people.json").unwrap();
    assert!(snapshot.complete);
    assert_eq!(snapshot.identities, expected_people());
}

#[test]
fn csv_export_with_quoted_commas_and_semicolon_groups_is_read() {
    let snapshot = read("people.csv").unwrap();
    assert!(snapshot.complete);
    assert_eq!(snapshot.identities, expected_people());
}

#[test]
fn json_and_csv_of_the_same_people_give_the_same_snapshot() {
    assert_eq!(read("people.json").unwrap(), read("people.csv").unwrap());
}

#[test]
fn csv_columns_may_come_in_any_order_and_optional_ones_may_be_absent() {
    let identities = read("people-reordered.csv").unwrap().identities;
    let ada = Identity {
        email: None,
        given_name: None,
        family_name: None,
        department: None,
        ..expected_people().remove(0)
    };
    assert_eq!(identities, vec![ada]);
}

#[test]
fn extension_is_matched_ignoring_case() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("DIRECTORY.JSON");
    std::fs::copy(fixture("people.json"), &json).unwrap();
    let csv = dir.path().join("Directory.Csv");
    std::fs::copy(fixture("people.csv"), &csv).unwrap();
    assert_eq!(FileSource::new(json).read().unwrap().identities.len(), 3);
    assert_eq!(FileSource::new(csv).read().unwrap().identities.len(), 3);
}

#[test]
fn empty_files_are_valid_empty_snapshots() {
    for name in [
        "empty.json",
        "empty-users.json",
        "empty.csv",
        "header-only.csv",
    ] {
        let snapshot = read(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(snapshot.identities.is_empty(), "{name}");
        assert!(snapshot.complete, "{name}");
    }
}

#[test]
fn a_byte_order_mark_is_ignored() {
    let text = format!(
        "\u{feff}{}",
        std::fs::read_to_string(fixture("people.csv")).unwrap()
    );
    assert_eq!(
        parse_csv(&text, Path::new("bom.csv")).unwrap(),
        expected_people()
    );
    let text = format!(
        "\u{feff}{}",
        std::fs::read_to_string(fixture("people.json")).unwrap()
    );
    assert_eq!(
        parse_json(&text, Path::new("bom.json")).unwrap(),
        expected_people()
    );
}

#[tokio::test]
async fn directory_snapshot_reads_the_file_and_describes_it() {
    let path = fixture("people.json");
    let directory = Directory::File(FileSource::new(path.clone()));
    assert_eq!(directory.describe(), format!("file {}", path.display()));
    let snapshot = directory.snapshot().await.unwrap();
    assert_eq!(snapshot, read("people.csv").unwrap());
}

/// Asserts the error is `Invalid` at `location` for `field`, and that its message
/// names the file, the row, the field and says `what`.
fn assert_invalid(name: &str, location: &str, field: &str, what: &str) {
    let error = read_err(name);
    let message = error.to_string();
    let path = fixture(name);
    match &error {
        DirectoryError::Invalid {
            path: p,
            location: l,
            field: f,
            ..
        } => {
            assert_eq!(p, &path, "{message}");
            assert_eq!(l, location, "{message}");
            assert_eq!(f.as_deref(), Some(field), "{message}");
        }
        other => panic!("{name}: expected Invalid, got {other:?}"),
    }
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains(location), "{message}");
    assert!(message.contains(&format!("field \"{field}\"")), "{message}");
    assert!(message.contains(what), "{message}");
    assert!(!error.is_transient());
    assert!(!Transient::is_transient(&error));
}

#[test]
fn duplicate_ids_are_rejected_naming_both_rows() {
    assert_invalid(
        "duplicate-id.json",
        "users[2] (id \"u1\")",
        "id",
        "duplicate id \"u1\", first seen at users[0]",
    );
    assert_invalid(
        "duplicate-id.csv",
        "line 4",
        "id",
        "duplicate id \"u1\", first seen at line 2",
    );
}

#[test]
fn of_several_duplicates_the_earliest_repeat_is_reported() {
    let user = |id: &str, name: &str| {
        format!(r#"{{"id": "{id}", "userName": "{name}", "status": "active"}}"#)
    };
    let text = format!(
        r#"{{"users": [{}, {}, {}, {}]}}"#,
        user("u1", "a"),
        user("u2", "b"),
        user("u2", "c"),
        user("u1", "d")
    );
    let message = parse_json_err(&text);
    assert!(
        message.contains(
            "users[2] (id \"u2\"), field \"id\": duplicate id \"u2\", first seen at users[1]"
        ),
        "{message}"
    );
    let csv = "id,userName,status\nu1,a,active\nu2,B,active\nu3,c,active\nu4,b,active\n";
    let message = parse_csv(csv, Path::new("d.csv")).unwrap_err().to_string();
    assert!(
        message.contains("line 5, field \"userName\": duplicate userName \"b\" (compared ignoring case), first seen at line 3"),
        "{message}"
    );
}

#[test]
fn user_names_differing_only_in_case_are_duplicates() {
    assert_invalid(
        "duplicate-username.json",
        "users[2] (id \"u3\")",
        "userName",
        "duplicate userName \"Ada@Example.com\" (compared ignoring case), first seen at users[0]",
    );
    assert_invalid(
        "duplicate-username.csv",
        "line 4",
        "userName",
        "first seen at line 2",
    );
}

#[test]
fn a_missing_required_column_is_rejected() {
    assert_invalid(
        "missing-column.csv",
        "line 1 (header)",
        "userName",
        "required column is missing",
    );
}

#[test]
fn an_unknown_column_is_rejected() {
    assert_invalid(
        "unknown-column.csv",
        "line 1 (header)",
        "usrName",
        "unknown column",
    );
}

#[test]
fn an_empty_or_missing_required_field_is_rejected() {
    assert_invalid(
        "empty-required.json",
        "users[1] (id \"u2\")",
        "userName",
        "required, but missing or empty",
    );
    assert_invalid(
        "empty-required.csv",
        "line 3",
        "userName",
        "required, but missing or empty",
    );
    assert_invalid(
        "missing-id.json",
        "users[0]",
        "id",
        "required, but missing or empty",
    );
}

#[test]
fn a_bad_status_is_rejected() {
    assert_invalid(
        "bad-status.json",
        "users[1] (id \"u2\")",
        "status",
        "unknown status \"retired\"",
    );
    // The first record spans lines 2–3 (a quoted newline): u2 starts on line 4.
    assert_invalid(
        "bad-status.csv",
        "line 4",
        "status",
        "unknown status \"retired\"",
    );
}

#[test]
fn an_unknown_json_field_is_rejected_not_dropped() {
    assert_invalid(
        "unknown-field.json",
        "users[1] (id \"u2\")",
        "usrName",
        "unknown field",
    );
}

#[test]
fn an_unknown_extension_is_rejected_naming_the_path() {
    let error = read_err("directory.txt");
    assert!(
        matches!(&error, DirectoryError::UnsupportedFormat { path } if *path == fixture("directory.txt")),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&fixture("directory.txt").display().to_string()),
        "{message}"
    );
    assert!(message.contains(".json or .csv"), "{message}");
    assert!(!error.is_transient());
}

#[test]
fn a_missing_file_is_an_io_error_naming_the_path() {
    let error = read_err("no-such-file.json");
    assert!(matches!(error, DirectoryError::Io { .. }), "{error:?}");
    assert!(error.to_string().contains("no-such-file.json"), "{error}");
    assert!(!error.is_transient());
}

fn parse_json_err(text: &str) -> String {
    match parse_json(text, Path::new("d.json")) {
        Ok(identities) => panic!("{text} should be rejected, got {identities:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn malformed_json_is_rejected_with_its_position() {
    let message = parse_json_err("{\"users\": [\n  {\"id\": \"u1\",\n}");
    assert!(message.contains("d.json"), "{message}");
    assert!(message.contains("line 3"), "{message}");

    let message = parse_json_err("{\"people\": []}");
    assert!(
        message.contains("top level, field \"people\": unknown field"),
        "{message}"
    );

    let message = parse_json_err("{}");
    assert!(message.contains("field \"users\": missing"), "{message}");

    let message = parse_json_err(r#"{"users": ["ada"]}"#);
    assert!(
        message.contains("users[0]: expected a user object, found a string"),
        "{message}"
    );

    let message = parse_json_err(r#"{"users": [{"id": 7, "userName": "a", "status": "active"}]}"#);
    assert!(
        message.contains("users[0], field \"id\": expected a string, found the number 7"),
        "{message}"
    );

    let message = parse_json_err(
        r#"{"users": [{"id": "u1", "userName": "a", "status": "active", "groups": "Ops"}]}"#,
    );
    assert!(
        message.contains("users[0] (id \"u1\"), field \"groups\": expected an array"),
        "{message}"
    );
}

#[test]
fn a_json_user_error_names_the_id_even_when_it_comes_after_the_bad_field() {
    let message = parse_json_err(
        r#"{"users": [{"usrName": "a", "id": "u9", "userName": "a", "status": "active"}]}"#,
    );
    assert!(
        message.contains("users[0] (id \"u9\"), field \"usrName\": unknown field"),
        "{message}"
    );
}

#[test]
fn a_json_key_given_twice_in_one_user_is_rejected() {
    let message = parse_json_err(
        r#"{"users": [{"id": "u1", "userName": "a", "status": "active", "status": "suspended"}]}"#,
    );
    assert!(
        message.contains("users[0] (id \"u1\"), field \"status\": appears twice"),
        "{message}"
    );
}

/// Errors name the file line the row is on, with CRLF line ends (exports from
/// Windows tools) and after a blank line too, where the CSV reader's own count is
/// one short.
#[test]
fn csv_errors_name_the_file_line_with_crlf_line_ends_and_blank_lines() {
    let csv = "id,userName,status\r\nu1,a,active\r\nu2,b,active\r\nu3,c,actve\r\n";
    let message = parse_csv(csv, Path::new("d.csv")).unwrap_err().to_string();
    assert!(
        message.contains("line 4, field \"status\": unknown status \"actve\""),
        "{message}"
    );
    let csv = "id,userName,status\r\nu1,a,active\r\nu2,b\r\n";
    let message = parse_csv(csv, Path::new("d.csv")).unwrap_err().to_string();
    assert!(
        message.contains("line 3: has 2 fields, but the header has 3"),
        "{message}"
    );
    let csv = "id,userName,status\nu1,a,active\n\nu2,b,actve\nu3,c,active\nu4,A,active\n";
    let message = parse_csv(csv, Path::new("d.csv")).unwrap_err().to_string();
    assert!(message.contains("line 4, field \"status\""), "{message}");
    let csv = "id,userName,status\r\nu1,a,active\r\n\r\nu2,b,active\r\nu3,B,active\r\n";
    let message = parse_csv(csv, Path::new("d.csv")).unwrap_err().to_string();
    assert!(
        message.contains("line 5, field \"userName\"") && message.contains("first seen at line 4"),
        "{message}"
    );
}

/// A quote opened and never closed swallows the rest of the file into one field:
/// the error says so, on the line the quote is on.
#[test]
fn an_unclosed_quote_in_a_csv_row_is_named() {
    let csv = "id,userName,status\nu1,a,active\nu2,\"b,active\nu3,c,active\n";
    let message = parse_csv(csv, Path::new("d.csv")).unwrap_err().to_string();
    assert!(
        message.contains("line 3: has 2 fields, but the header has 3; a quote (\") opened in this row is never closed"),
        "{message}"
    );
    let csv = "id,userName,status\nu1,a\n";
    let message = parse_csv(csv, Path::new("d.csv")).unwrap_err().to_string();
    assert!(!message.contains("quote"), "{message}");
}

#[test]
fn csv_rows_with_the_wrong_number_of_fields_are_rejected() {
    let error = parse_csv(
        "id,userName,status\nu1,ada@example.com\n",
        Path::new("d.csv"),
    )
    .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("d.csv: line 2: has 2 fields, but the header has 3"),
        "{message}"
    );
}

#[test]
fn null_optional_fields_mean_none() {
    let text = r#"{"users": [{"id": "u1", "userName": "a", "status": "active", "email": null}]}"#;
    let identities = parse_json(text, Path::new("d.json")).unwrap();
    assert_eq!(identities[0].email, None);
    assert!(identities[0].groups.is_empty());
}

/// A scope group no row of the export carries is refused, as the network
/// connectors refuse one the directory does not have: a renamed group or a typo
/// would put every member out of scope. A near miss in case is named.
#[test]
fn a_scope_group_no_row_carries_is_refused() {
    let read = |groups: &[&str]| {
        FileSource::new(fixture("people.json"))
            .with_scope_groups(groups.iter().map(|g| (*g).to_owned()).collect())
            .read()
    };
    assert!(read(&["Engineering"]).is_ok());
    let err = read(&["Engineering", "engineering"]).unwrap_err();
    assert!(matches!(err, DirectoryError::Scope { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("\"engineering\""), "{text}");
    assert!(text.contains("rows carry \"Engineering\""), "{text}");
    assert!(text.contains("policy.scope_groups"), "{text}");
    let text = read(&["Contractors"]).unwrap_err().to_string();
    assert!(
        text.contains("\"Contractors\"") && !text.contains("rows carry"),
        "{text}"
    );
}

/// A mapping group the export carries only in another case is a typo, refused
/// with the spelling the rows use; a mapping group no row carries in any case
/// passes (its last members may have left). Policy compares mapping names exactly.
#[test]
fn a_mapping_group_carried_only_in_another_case_is_refused() {
    let read = |groups: &[&str]| {
        FileSource::new(fixture("people.json"))
            .with_mapping_groups(
                groups
                    .iter()
                    .enumerate()
                    .map(|(i, g)| (i, (*g).to_owned()))
                    .collect(),
            )
            .read()
    };
    assert!(read(&["Engineering"]).is_ok());
    assert!(read(&["Engineering", "Former Staff"]).is_ok(), "emptied");
    let err = read(&["Engineering", "ENGINEERING"]).unwrap_err();
    assert!(matches!(err, DirectoryError::Scope { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("\"ENGINEERING\" (policy.mapping[1].group)")
            && text.contains("rows carry \"Engineering\""),
        "{text}"
    );
}

/// One row spelling the scope group in another case would fall out of scope and
/// be deactivated (policy compares names exactly): the export is refused, naming
/// each spelling and the odd row. A mapping group likewise; a protected group,
/// compared without regard to case, may be spelt either way.
#[test]
fn an_export_spelling_a_scope_or_mapping_group_two_ways_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("directory.csv");
    std::fs::write(
        &path,
        "id,userName,status,groups\n\
         u1,ada@ex.com,active,Taskade Users;Engineering\n\
         u2,ben@ex.com,active,Taskade Users;Engineering;IT Admins\n\
         u3,cy@ex.com,active,taskade users;ENGINEERING;it admins\n",
    )
    .unwrap();
    let source = FileSource::new(path.clone()).with_scope_groups(vec!["Taskade Users".into()]);
    let message = source.read().unwrap_err().to_string();
    assert!(
        message.contains(
            "spell group \"Taskade Users\" (policy.scope_groups) in 2 ways: \
             \"Taskade Users\" (2 rows: ada@ex.com, ben@ex.com), \"taskade users\" (1 row: cy@ex.com)"
        ) && message.contains("fall out of scope"),
        "{message}"
    );

    std::fs::write(
        &path,
        "id,userName,status,groups\n\
         u1,ada@ex.com,active,Taskade Users;Engineering\n\
         u2,ben@ex.com,active,Taskade Users;Engineering;IT Admins\n\
         u3,cy@ex.com,active,Taskade Users;ENGINEERING;it admins\n",
    )
    .unwrap();
    let scoped = || FileSource::new(path.clone()).with_scope_groups(vec!["Taskade Users".into()]);
    let message = scoped()
        .with_mapping_groups(vec![(0, "Engineering".into())])
        .read()
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("\"Engineering\" (policy.mapping[0].group) in 2 ways")
            && message.contains("\"ENGINEERING\" (1 row: cy@ex.com)"),
        "{message}"
    );
    let read = scoped()
        .with_required_groups(vec![seatwarden::directory::RequiredGroup::protected(
            "IT Admins",
        )])
        .read()
        .unwrap();
    assert_eq!(read.identities.len(), 3);
}

/// A protected group no row carries is refused: a typo would take the protection
/// away from all its members. Compared without regard to case, as policy does.
#[test]
fn a_protected_group_no_row_carries_is_refused() {
    let read = |groups: &[&str]| {
        FileSource::new(fixture("people.json"))
            .with_required_groups(
                groups
                    .iter()
                    .map(|g| seatwarden::directory::RequiredGroup::protected(g))
                    .collect(),
            )
            .read()
    };
    assert!(read(&["ENGINEERING"]).is_ok());
    let err = read(&["Engineering", "Engineers"]).unwrap_err();
    assert!(matches!(err, DirectoryError::Scope { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("\"Engineers\"") && text.contains("safety.protected_groups"),
        "{text}"
    );
}
