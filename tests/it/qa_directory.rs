//! Directory sources on awkward real-world data: exports in the encodings office
//! tools write, and what each source makes of it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::directory::{DirectoryError, FileSource};

/// Writes `bytes` as `name` in a fresh folder and reads it as the file source does.
fn read_bytes(name: &str, bytes: &[u8]) -> DirectoryError {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    match FileSource::new(path).read() {
        Ok(snapshot) => panic!("{name} should be rejected, got {snapshot:?}"),
        Err(error) => error,
    }
}

#[test]
fn an_export_saved_as_windows_1252_names_the_line_and_the_byte() {
    // Excel's plain "CSV" writes é as the single byte 0xe9.
    let csv = b"id,userName,email,status,groups\n\
                u1,ada@example.com,ada@example.com,active,Taskade Users\n\
                u2,jos\xe9@example.com,,active,Taskade Users\n";
    let error = read_bytes("directory.csv", csv);
    assert!(matches!(error, DirectoryError::Invalid { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("directory.csv: line 3, column 7"),
        "{message}"
    );
    assert!(message.contains("byte 0xe9 is not UTF-8"), "{message}");
    assert!(message.contains("CSV UTF-8"), "{message}");
}

#[test]
fn a_utf16_export_is_named_as_such() {
    // Windows PowerShell's `>` writes UTF-16 with a byte-order mark.
    let mut json = vec![0xff, 0xfe];
    for unit in r#"{"users": []}"#.encode_utf16() {
        json.extend_from_slice(&unit.to_le_bytes());
    }
    let message = read_bytes("directory.json", &json).to_string();
    assert!(message.contains("it is UTF-16"), "{message}");
    assert!(message.contains("-Encoding utf8"), "{message}");
}

/// Reads `text` as a CSV export.
fn read_csv(text: &str) -> Result<Vec<seatwarden::model::Identity>, DirectoryError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("directory.csv");
    std::fs::write(&path, text).unwrap();
    FileSource::new(path).read().map(|s| s.identities)
}

#[test]
fn spreadsheet_leftovers_of_empty_rows_and_unnamed_empty_columns_are_no_one() {
    // Excel writes a trailing comma for a formatted cell right of the last column,
    // and a row of commas for a formatted row under the last person.
    let people = read_csv(
        "id,userName,status,groups,\r\n\
         u1,ada@example.com,active,Taskade Users,\r\n\
         u2,ben@example.com,suspended,Taskade Users,\r\n\
         ,,,,\r\n\
         ,, ,,\r\n",
    )
    .unwrap();
    let names: Vec<&str> = people.iter().map(|p| p.user_name.as_str()).collect();
    assert_eq!(names, ["ada@example.com", "ben@example.com"]);
}

#[test]
fn an_unnamed_column_that_holds_a_value_is_refused_where_it_does() {
    let error = read_csv(
        "id,userName,status,,groups\n\
         u1,ada@example.com,active,,Taskade Users\n\
         u2,ben@example.com,active,Engineering,Taskade Users\n",
    )
    .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("line 3: column 4 has no name in the header but holds \"Engineering\""),
        "{message}"
    );
}

#[test]
fn a_row_with_some_values_is_still_a_person_who_needs_an_id() {
    let error = read_csv(
        "id,userName,status,groups\n\
         u1,ada@example.com,active,Taskade Users\n\
         ,,,Taskade Users\n",
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("line 3, field \"id\": required"),
        "{error}"
    );
}

/// A SCIM provider that serves a User whose userName is only spaces: the read
/// fails naming that User, rather than giving an identity without a name.
#[tokio::test]
async fn a_scim_directory_user_with_a_blank_user_name_fails_the_read_naming_it() {
    use seatwarden::directory::{Directory, ScimDirectorySettings, ScimDirectorySource, Secret};
    use serde_json::json;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let list = |resources: serde_json::Value| {
        let n = resources.as_array().map_or(0, Vec::len);
        ResponseTemplate::new(200).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": n, "startIndex": 1, "itemsPerPage": n, "Resources": resources,
        }))
    };
    let user = "urn:ietf:params:scim:schemas:core:2.0:User";
    let idp = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(list(json!([
            {"schemas": [user], "id": "p1", "userName": "ada@example.com", "active": true},
            {"schemas": [user], "id": "p2", "userName": "   ", "active": true,
             "emails": [{"value": "ben@example.com", "primary": true}]},
        ])))
        .mount(&idp)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(list(json!([
            {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "id": "g1",
             "displayName": "Taskade Users", "members": [{"value": "p1"}, {"value": "p2"}]},
        ])))
        .mount(&idp)
        .await;
    let directory = Directory::Scim(ScimDirectorySource::new(ScimDirectorySettings {
        url: url::Url::parse(&format!("{}/scim/v2", idp.uri())).unwrap(),
        token: Secret::Inline("idp-token".to_owned().into()),
        page_size: 100,
        pagination: Default::default(),
        max_concurrency: 1,
        requests_per_second: 0,
        timeout: std::time::Duration::from_secs(10),
        retry: Default::default(),
        scope_groups: vec!["Taskade Users".to_owned()],
        other_groups: Vec::new(),
        distinct_groups: Vec::new(),
        required_groups: Vec::new(),
        ca_file: None,
        missing_active: Default::default(),
    }));
    let message = directory.snapshot().await.unwrap_err().to_string();
    assert!(message.contains("/scim/v2/Users/p2"), "{message}");
    assert!(
        message.contains("User \"p2\" has an empty userName (email \"ben@example.com\")"),
        "{message}"
    );
}
