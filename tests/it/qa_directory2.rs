//! Directory data that would quietly take someone out of scope: a list of groups
//! written as one name, a `null` where the groups should be, and what each source
//! makes of it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::directory::{DirectoryError, FileSource, RequiredGroup};
use seatwarden::model::Identity;

/// Reads `text` as the export `name` with the configuration of a usual setup: one
/// scope group, one mapping, one protected group.
fn read(name: &str, text: &str) -> Result<Vec<Identity>, DirectoryError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    FileSource::new(path)
        .with_scope_groups(vec!["Taskade Users".into()])
        .with_mapping_groups(vec![(0, "Engineering".into())])
        .with_required_groups(vec![RequiredGroup::protected("IT Admins")])
        .read()
        .map(|snapshot| snapshot.identities)
}

fn refused(name: &str, text: &str) -> String {
    match read(name, text) {
        Ok(people) => panic!("{name} should be refused, got {people:?}"),
        Err(error) => {
            assert!(matches!(error, DirectoryError::Invalid { .. }), "{error:?}");
            error.to_string()
        }
    }
}

#[test]
fn a_csv_groups_cell_written_with_commas_is_refused_naming_the_line_and_the_fix() {
    let message = refused(
        "directory.csv",
        "id,userName,status,groups\n\
         u1,ada@example.com,active,Taskade Users;Engineering\n\
         u2,ben@example.com,active,\"Taskade Users, Engineering\"\n",
    );
    assert!(
        message.contains("directory.csv: line 3, field \"groups\""),
        "{message}"
    );
    assert!(
        message.contains(
            "\"Taskade Users, Engineering\" is not a group the configuration names, but split \
             at its commas it names \"Taskade Users\" (policy.scope_groups) and \"Engineering\" \
             (policy.mapping[0].group)"
        ),
        "{message}"
    );
    assert!(
        message.contains("separated by ';': write \"Taskade Users;Engineering\""),
        "{message}"
    );
}

#[test]
fn a_protected_group_joined_to_another_is_refused_too() {
    // Read as one name, "IT Admins" would protect no one.
    let message = refused(
        "directory.csv",
        "id,userName,status,groups\n\
         u1,ada@example.com,active,Taskade Users;Engineering\n\
         u2,root@example.com,active,Taskade Users;it admins | Engineering\n",
    );
    assert!(message.contains("line 3"), "{message}");
    assert!(
        message.contains("its '|' characters it names \"it admins\" (safety.protected_groups)"),
        "{message}"
    );
}

#[test]
fn a_line_break_inside_a_groups_cell_is_no_separator() {
    // Alt+Enter in an Excel cell.
    let message = refused(
        "directory.csv",
        "id,userName,status,groups\r\n\
         u1,ada@example.com,active,\"Taskade Users\r\nEngineering\"\r\n",
    );
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("its line breaks it names"), "{message}");
}

#[test]
fn group_names_that_hold_a_comma_are_still_group_names() {
    // Not refused: the configuration names none of the parts ("Smith, Jones Lab"),
    // or it names the whole ("Sales, EMEA" as a mapping group).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("directory.csv");
    std::fs::write(
        &path,
        "id,userName,status,groups\n\
         u1,ada@example.com,active,\"Taskade Users;Smith, Jones Lab\"\n\
         u2,ben@example.com,active,\"Taskade Users;Sales, EMEA\"\n",
    )
    .unwrap();
    let people = FileSource::new(path)
        .with_scope_groups(vec!["Taskade Users".into()])
        .with_mapping_groups(vec![(0, "Sales, EMEA".into()), (1, "Sales".into())])
        .read()
        .unwrap()
        .identities;
    assert_eq!(people[0].groups, ["Taskade Users", "Smith, Jones Lab"]);
    assert_eq!(people[1].groups, ["Taskade Users", "Sales, EMEA"]);
}

#[test]
fn a_json_group_entry_that_is_a_joined_list_is_refused() {
    let message = refused(
        "directory.json",
        r#"{"users": [
            {"id": "u1", "userName": "ada@example.com", "status": "active",
             "groups": ["Taskade Users", "Engineering"]},
            {"id": "u2", "userName": "ben@example.com", "status": "active",
             "groups": ["Taskade Users,Engineering"]}
        ]}"#,
    );
    assert!(
        message.contains("directory.json: users[1] (id \"u2\"), field \"groups\""),
        "{message}"
    );
    assert!(
        message.contains(r#"a string of its own: write ["Taskade Users","Engineering"]"#),
        "{message}"
    );
}

#[test]
fn json_groups_null_is_refused_naming_the_person_while_absent_or_empty_means_none() {
    let message = refused(
        "directory.json",
        r#"{"users": [
            {"id": "u1", "userName": "ada@example.com", "status": "active",
             "groups": ["Taskade Users"]},
            {"id": "u2", "userName": "ben@example.com", "status": "active", "groups": null}
        ]}"#,
    );
    assert!(
        message.contains("directory.json: users[1] (id \"u2\"), field \"groups\": null where"),
        "{message}"
    );
    assert!(
        message.contains("write [] for a person in no group"),
        "{message}"
    );

    let people = read(
        "directory.json",
        r#"{"users": [
            {"id": "u1", "userName": "ada@example.com", "status": "active",
             "groups": ["Taskade Users", "IT Admins"]},
            {"id": "u2", "userName": "ben@example.com", "status": "active", "groups": []},
            {"id": "u3", "userName": "cy@example.com", "status": "active"}
        ]}"#,
    )
    .unwrap();
    assert!(people[1].groups.is_empty() && people[2].groups.is_empty());
}

/// A scope group as it looks on screen but not as policy compares it: copied from
/// a web page or a document, or typed in a spreadsheet. Read as it is, the person
/// would be out of scope and deactivated, with nothing said.
#[test]
fn a_configured_group_written_with_invisible_or_typographic_characters_is_refused() {
    let cases = [
        ("Taskade\u{a0}Users", "a no-break space (U+00A0)"),
        ("Taskade Users\u{200b}", "a zero-width space (U+200B)"),
        ("Taskade  Users", "two spaces in a row"),
        ("Taskade\tUsers", "a tab"),
        (
            "\u{201c}Taskade Users\u{201d}",
            "the quote \u{201c}, the quote \u{201d}",
        ),
        ("Engin\u{ad}eering", "the character U+00AD"),
    ];
    for (written, oddity) in cases {
        let text = format!(
            "id,userName,status,groups\n\
             u1,ada@example.com,active,Taskade Users;Engineering\n\
             u2,ben@example.com,active,\"{written}\"\n"
        );
        let message = refused("directory.csv", &text);
        assert!(
            message.contains(&format!("line 3, field \"groups\": {written:?} is not")),
            "{message}"
        );
        assert!(
            message.contains(&format!("differs from it only in {oddity}:")),
            "{written:?}: {message}"
        );
    }

    let message = refused(
        "directory.json",
        "{\"users\": [{\"id\": \"u1\", \"userName\": \"ada@example.com\", \"status\": \"active\", \
         \"groups\": [\"Taskade Users\", \"IT\u{a0}Admins\"]}]}",
    );
    assert!(
        message.contains(
            "users[0] (id \"u1\"), field \"groups\": \"IT\\u{a0}Admins\" is not \"IT Admins\" \
             (safety.protected_groups)"
        ),
        "{message}"
    );
    assert!(message.contains("write \"IT Admins\""), "{message}");
}

/// Exports saved by Excel where the decimal separator is a comma are separated by
/// `;`, and a header typed by hand may differ in case: say so, not only "unknown
/// column" with the whole header as its name.
#[test]
fn a_csv_separated_by_semicolons_or_tabs_or_a_header_in_another_case_says_so() {
    for (separator, what) in [(";", "';'"), ("\t", "tabs")] {
        let header = ["id", "userName", "status", "groups"].join(separator);
        let row = ["u1", "ada@example.com", "active", "Taskade Users"].join(separator);
        let message = refused("directory.csv", &format!("\u{feff}{header}\r\n{row}\r\n"));
        assert!(message.contains("line 1 (header)"), "{message}");
        assert!(
            message.contains(&format!(
                "unknown column: the file is separated by {what}, not commas"
            )),
            "{message}"
        );
    }
    let message = refused(
        "directory.csv",
        "id,UserName,status,groups\nu1,ada@example.com,active,Taskade Users\n",
    );
    assert!(
        message.contains(
            "line 1 (header), field \"UserName\": unknown column; column names are compared \
             exactly: write \"userName\""
        ),
        "{message}"
    );
}

/// An export without any groups, where the configuration uses them, would put
/// every person in none: out of scope, or every mapped role taken away when
/// only mappings name groups (which no check of scope groups would notice).
#[test]
fn an_export_without_groups_is_refused_when_the_configuration_names_groups() {
    let only_mappings = |name: &str, text: &str| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        FileSource::new(path)
            .with_mapping_groups(vec![
                (0, "Taskade Admins".into()),
                (1, "Engineering".into()),
            ])
            .read()
    };
    let message = only_mappings(
        "directory.csv",
        "id,userName,status\nu1,ada@example.com,active\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.contains(
            "line 1 (header), field \"groups\": missing, but the configuration names groups \
             (policy.mapping)"
        ),
        "{message}"
    );
    let message = only_mappings(
        "directory.json",
        r#"{"users": [{"id": "u1", "userName": "ada@example.com", "status": "active"}]}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("every user, field \"groups\": missing"),
        "{message}"
    );

    // A groups field, even empty on every row, is an export that has them.
    only_mappings(
        "directory.csv",
        "id,userName,status,groups\nu1,ada@example.com,active,\n",
    )
    .unwrap();
    only_mappings(
        "directory.json",
        r#"{"users": [{"id": "u1", "userName": "ada@example.com", "status": "active", "groups": []},
                      {"id": "u2", "userName": "ben@example.com", "status": "active"}]}"#,
    )
    .unwrap();
    // Nor does a configuration that names no group need them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("directory.csv");
    std::fs::write(&path, "id,userName,status\nu1,ada@example.com,active\n").unwrap();
    FileSource::new(path).read().unwrap();
}

/// An id, userName or email with a character that does not show, pasted along
/// with it: matched exactly, an id so written is a stranger (the person's account
/// deactivated, another created), and a userName or email is written to the
/// account as it is.
#[test]
fn an_id_user_name_or_email_with_a_hidden_character_is_refused() {
    let cases = [
        (
            "u2\u{200b},ben@example.com,",
            "id",
            "a zero-width space (U+200B)",
        ),
        (
            "u2,ben@example.com\u{feff},",
            "userName",
            "the character U+FEFF",
        ),
        (
            "u2,ben\u{a0}@example.com,",
            "userName",
            "a no-break space (U+00A0)",
        ),
        (
            "u2,ben@example.com,\"ben@example.com\u{2060}\"",
            "email",
            "the character U+2060",
        ),
    ];
    for (start, field, hidden) in cases {
        let text = format!(
            "id,userName,email,status,groups\n\
             u1,ada@example.com,,active,Taskade Users\n\
             {start},active,Taskade Users\n"
        );
        let message = refused("directory.csv", &text);
        assert!(
            message.contains(&format!("line 3, field \"{field}\": ")),
            "{message}"
        );
        assert!(
            message.contains(&format!("holds {hidden}, which does not show")),
            "{message}"
        );
    }
}
