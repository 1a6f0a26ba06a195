//! Session 59, a first day with seatwarden: the quickstart, every `--help`, a
//! realistic configuration written from the README and the mistakes people make
//! in it, run through the binary as a new IT engineer runs it.
//!
//! - A configuration file saved as Windows-1252 (a group "Geschäftsführung")
//!   failed with "cannot read it again: stream did not contain valid UTF-8",
//!   and one saved as UTF-16 with a TOML error about the redacted first line:
//!   now the line, the column and the byte, or "UTF-16", and how to save it.
//! - `schedule.timezone = "GMT+1"` was answered "did you mean "Etc/GMT+1"?",
//!   which is UTC-01:00, two hours from what was meant; "America/New York"
//!   had no suggestion at all.
//! - An AWS EventBridge cron (`cron(0 8 ? * MON-FRI *)`, a year last) was
//!   refused with croner's "illegal character '?'", a character the layout
//!   takes: now named, with the five fields to write.
//! - `SEATWARDEN__SAFETY__DISTINCT_GROUPS` was refused with "expected a list,
//!   such as ["a", "b"]", a form no variable takes: the list is the file's only,
//!   as the README says.
//! - `report.email.to = ["a@example.com; b@example.com"]`, as mail clients
//!   write recipients, was "invalid mail address …: Invalid input" alone.
//! - A `[directory]` key of the wrong type (`start_tls = "yes"`, a variable
//!   `SEATWARDEN__DIRECTORY__PAGE_SIZE=abc`) said serde's "invalid value:
//!   string …, expected a boolean"; the other sections' keys say what to write.
//! - `seatwarden demo --dir FILE` said "preparing the demo directory FILE:
//!   File exists (os error 17)".
//! - `reconcile --help` and `resume --help` said exit 4 is "some actions
//!   failed", not the writes a stopped run did not send.
//! - A secret path written `~/…` was called "the relative path", with no word
//!   on `~` not being expanded.
//! - `seatwarden --help` said only the `[[policy.mapping]]` tables cannot be set
//!   from the environment.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use crate::fixtures::seatwarden_in;

/// A complete configuration around a file directory (the example export), with
/// `extra` appended; written to `dir/seatwarden.toml` as the bytes given.
pub(crate) fn configured(dir: &Path, extra: &[u8]) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example/directory.json");
    std::fs::copy(example, dir.join("directory.json")).unwrap();
    let mut text = b"[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
        [workspace]\nurl = \"https://workspace.example/scim/v2\"\ntoken_file = \"token\"\n\n\
        [state]\npath = \"state.db\"\n\n"
        .to_vec();
    text.extend_from_slice(extra);
    std::fs::write(dir.join("seatwarden.toml"), text).unwrap();
    std::fs::write(dir.join("token"), "scim-token\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("token"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
}

pub(crate) fn check_config(dir: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    seatwarden_in(dir, &env, &["check-config"])
}

#[test]
fn a_configuration_saved_as_windows_1252_names_the_line_and_the_byte() {
    let dir = tempfile::tempdir().unwrap();
    // "Geschäftsführung" as Windows-1252 writes it: ä is 0xe4, ü 0xfc.
    configured(
        dir.path(),
        b"[safety]\nprotected_groups = [\"Gesch\xe4ftsf\xfchrung\"]\n",
    );
    let (code, err) = check_config(dir.path(), &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("line 13, column 27: byte 0xe4 is not UTF-8: the configuration must be UTF-8"),
        "{err}"
    );
    assert!(err.contains("save it as UTF-8"), "{err}");
    assert!(!err.contains("cannot read it again"), "{err}");
}

#[test]
fn a_configuration_saved_as_utf16_is_said_to_be() {
    let dir = tempfile::tempdir().unwrap();
    configured(dir.path(), b"");
    let path = dir.path().join("seatwarden.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // What Windows PowerShell's `Out-File` writes: UTF-16LE with its mark.
    let mut utf16 = vec![0xff, 0xfe];
    utf16.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    std::fs::write(&path, utf16).unwrap();
    let (code, err) = check_config(dir.path(), &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("the file is UTF-16 (it starts with a UTF-16 byte-order mark), not UTF-8"),
        "{err}"
    );
    assert!(!err.contains("TOML parse error"), "{err}");
}

#[test]
fn an_offset_written_as_a_time_zone_is_not_answered_with_the_opposite_etc_zone() {
    let dir = tempfile::tempdir().unwrap();
    configured(dir.path(), b"[schedule]\ntimezone = \"GMT+1\"\n");
    let (code, err) = check_config(dir.path(), &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        !err.contains("did you mean \"Etc/GMT+1\""),
        "Etc/GMT+1 is UTC-01:00, not what GMT+1 means: {err}"
    );
    assert!(
        err.contains(
            "key `schedule.timezone`: unknown time zone \"GMT+1\": that is a UTC offset, not a \
             time zone: write the IANA zone of the place whose clock is meant"
        ),
        "{err}"
    );
    assert!(
        err.contains("for UTC+01:00 all year, \"Etc/GMT-1\""),
        "{err}"
    );

    // The same from a variable, west of Greenwich, as ISO 8601 writes it.
    let (code, err) = check_config(
        dir.path(),
        &[("SEATWARDEN__SCHEDULE__TIMEZONE", "UTC-05:00")],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("for UTC-05:00 all year, \"Etc/GMT+5\""),
        "{err}"
    );
}

#[test]
fn a_zone_written_with_a_space_for_its_underscore_is_suggested() {
    let dir = tempfile::tempdir().unwrap();
    configured(dir.path(), b"[report]\ntimezone = \"America/New York\"\n");
    let (code, err) = check_config(dir.path(), &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "key `report.timezone`: unknown time zone \"America/New York\": IANA names are \
             spelt exactly; did you mean \"America/New_York\"?"
        ),
        "{err}"
    );
}

#[test]
fn an_eventbridge_cron_is_named_with_the_five_fields_meant() {
    let dir = tempfile::tempdir().unwrap();
    configured(
        dir.path(),
        b"[schedule]\nreconcile = \"cron(0 8 ? * MON-FRI *)\"\n",
    );
    let (code, err) = check_config(dir.path(), &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "key `schedule.reconcile`: invalid cron expression \"cron(0 8 ? * MON-FRI *)\": \
             this is AWS EventBridge's layout (minute hour day-of-month month day-of-week \
             year), and a year field is not supported: write \"0 8 ? * MON-FRI\""
        ),
        "{err}"
    );
    assert!(!err.contains("illegal character"), "{err}");
}

#[test]
fn recipients_pasted_as_one_entry_are_told_to_be_listed_apart() {
    let dir = tempfile::tempdir().unwrap();
    configured(
        dir.path(),
        b"[report.email]\nsmtp_url = \"smtp://127.0.0.1:25\"\nfrom = \"seatwarden@example.com\"\n\
          to = [\"it-sec@example.com; soc@example.com\"]\n",
    );
    let (code, err) = check_config(dir.path(), &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "key `report.email.to[0]`: invalid mail address \"it-sec@example.com; \
             soc@example.com\""
        ) && err.contains(
            "(several addresses in one entry: give each its own, to = [\"a@example.com\", \
             \"b@example.com\"], or in SEATWARDEN__REPORT__EMAIL__TO separated by commas)"
        ),
        "{err}"
    );
}

/// A `[directory]` key said "invalid value: string \"yes\", expected a
/// boolean", where every other key says what to write.
#[test]
fn a_directory_boolean_given_as_text_says_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let ldap = |extra: &str| {
        format!(
            "[directory]\nkind = \"ldap\"\nurl = \"ldaps://dc1.corp.example.com\"\n\
             bind_dn = \"CN=svc-seatwarden,DC=corp,DC=example,DC=com\"\n\
             bind_password_file = \"token\"\nbase_dn = \"DC=corp,DC=example,DC=com\"\n{extra}\n\
             [workspace]\nurl = \"https://workspace.example/scim/v2\"\ntoken_file = \"token\"\n\n\
             [state]\npath = \"state.db\"\n"
        )
    };
    configured(dir.path(), b"");
    std::fs::write(dir.path().join("seatwarden.toml"), ldap("")).unwrap();
    let (code, err) = check_config(dir.path(), &[]);
    assert_eq!(code, Some(0), "{err}");

    let (code, err) = check_config(dir.path(), &[("SEATWARDEN__DIRECTORY__START_TLS", "yes")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "environment variable SEATWARDEN__DIRECTORY__START_TLS: key `directory.start_tls`: \
             expected true or false, found the text \"yes\""
        ),
        "{err}"
    );
    assert!(!err.contains("invalid value"), "{err}");

    std::fs::write(
        dir.path().join("seatwarden.toml"),
        ldap("page_size = \"500\"\n"),
    )
    .unwrap();
    let (code, err) = check_config(dir.path(), &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "key `directory.page_size`: expected a whole number from 1 to 2147483647, found \
             the text \"500\""
        ),
        "{err}"
    );
}

#[test]
fn distinct_groups_from_a_variable_is_said_to_be_the_files_only() {
    let dir = tempfile::tempdir().unwrap();
    configured(dir.path(), b"");
    let (code, err) = check_config(
        dir.path(),
        &[("SEATWARDEN__SAFETY__DISTINCT_GROUPS", "Founder's Club")],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "error: environment variable SEATWARDEN__SAFETY__DISTINCT_GROUPS: key \
             `safety.distinct_groups`: safety.distinct_groups is read from the file only"
        ),
        "{err}"
    );
    assert!(!err.contains("such as [\"a\", \"b\"]"), "{err}");
}

#[test]
fn help_names_every_key_a_variable_cannot_set() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
    assert!(
        help.contains(
            "Every configuration key (but the [[policy.mapping]] and [[safety.exceptions]] \
             tables and safety.distinct_groups, read from the file only) can be overridden"
        ),
        "{help}"
    );
}

/// `demo --dir` naming a file said "preparing the demo directory FILE: File
/// exists (os error 17)".
#[test]
fn demo_dir_naming_a_file_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "mine\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["demo", "--dir"])
        .arg(&file)
        .env_remove("SEATWARDEN_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "error: {} is a file, not a directory: give --dir a directory of its own",
            file.display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine\n");
}

/// `reconcile --help` (and `resume --help`) gave 4 as "some actions failed"
/// only, while a run whose writes stopped (a refused token, a workspace that
/// stopped answering) exits 4 with nothing failed.
#[test]
fn reconcile_help_says_4_covers_writes_not_sent() {
    for (command, needle) in [
        (
            "reconcile",
            "4 some actions failed, or were not sent because the run's writes stopped",
        ),
        (
            "resume",
            "4 some actions failed or were not sent because the writes stopped",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .args([command, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
        assert!(help.contains(needle), "{command}: {help}");
    }
}

/// `token_file = "~/seatwarden-trial/workspace-token"` (or a variable set in
/// quotes) was called "the relative path", taken from the configuration's
/// folder, without a word on why `~` is not the home folder.
#[test]
fn a_secret_path_starting_with_a_tilde_is_said_to_be_unexpanded() {
    let dir = tempfile::tempdir().unwrap();
    configured(dir.path(), b"");
    let (code, err) = check_config(
        dir.path(),
        &[
            (
                "SEATWARDEN__WORKSPACE__TOKEN_FILE",
                "~/seatwarden-trial/workspace-token",
            ),
            ("HOME", "/home/ada"),
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "; workspace.token_file is written \"~/seatwarden-trial/workspace-token\", but \
             seatwarden does not expand ~ (only a shell does, in a word it sees unquoted): \
             write the home folder in full, such as \
             \"/home/ada/seatwarden-trial/workspace-token\""
        ),
        "{err}"
    );
}
