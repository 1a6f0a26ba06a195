//! Session 63: the seatwarden commands seatwarden prints for a person to copy
//! into a (root) shell. Ids are the providers' strings: a SCIM provider's, an
//! LDAP DN, an email may hold a space, a `'`, `$(…)`, or start with `-`. Each
//! printed command is split as a POSIX shell splits it and parsed by the real
//! command line: the ids must arrive as they are.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::Parser;
use seatwarden::cli::{Cli, Command};
use seatwarden::model::{DirectorySnapshot, DriftKind, Role, WorkspaceSnapshot};
use seatwarden::plan::{DeprovisionAction, PlanSettings, Retention, plan};
use seatwarden::policy::{PolicySettings, Protected, UnmatchedAccounts, desired_state};

use crate::qa_cli::{account, first_plan_stored, person};
use crate::review_s48_unlink::{run, store_links};

/// An id a provider may choose that a bare paste would break: a space, a
/// quote, a command substitution.
const ODD_IDENTITY: &str = "it's $(x)";
const ODD_ACCOUNT: &str = "w 3";

/// `line` split into words as a POSIX shell splits a simple command: blanks
/// separate words; `'…'` is literal; `"…"` is literal but for `\"`, `\\`, `\$`
/// and `` \` ``; a `\` outside quotes takes the next character as it is. A `$`
/// or a backtick outside single quotes would be expanded by a shell: refused
/// here, so a command that would run something fails the test.
fn shell_split(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(done) = word.take() {
                    words.push(done);
                }
            }
            '\'' => {
                let word = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => panic!("unterminated ' in {line:?}"),
                    }
                }
            }
            '"' => {
                let word = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => panic!("unterminated \" in {line:?}"),
                        },
                        Some(c @ ('$' | '`')) => panic!("{c} expanded by the shell in {line:?}"),
                        Some(c) => word.push(c),
                        None => panic!("unterminated \" in {line:?}"),
                    }
                }
            }
            '\\' => {
                let next = chars.next().expect("a \\ at the end");
                word.get_or_insert_with(String::new).push(next);
            }
            c if "$`;&|<>()*?[#~".contains(c) => {
                panic!("{c:?} outside quotes is the shell's, not the id's, in {line:?}")
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// The command in backticks that starts with `start` in `text`.
fn quoted_command<'t>(text: &'t str, start: &str) -> &'t str {
    let from = text
        .find(&format!("`{start}"))
        .unwrap_or_else(|| panic!("no `{start}… in {text}"))
        + 1;
    let len = text[from..].find('`').expect("a closing backtick");
    &text[from..from + len]
}

/// `command` as the real command line parses it, after a shell split.
fn parsed(command: &str) -> Command {
    Cli::try_parse_from(shell_split(command))
        .unwrap_or_else(|e| panic!("{command:?} does not parse: {e}"))
        .command
}

/// The (identity, account, --replace) of a printed `link` command.
fn link_of(command: &str) -> (String, String, bool) {
    match parsed(command) {
        Command::Link {
            identity,
            account,
            replace,
            ..
        } => (identity, account, replace),
        other => panic!("{command:?} is not a link: {other:?}"),
    }
}

#[test]
fn the_shell_split_of_the_tests_is_a_posix_one() {
    assert_eq!(
        shell_split(r#"seatwarden link 'it'\''s $(x)' "a \"b\"" c\ d"#),
        ["seatwarden", "link", "it's $(x)", "a \"b\"", "c d"]
    );
}

/// `link ACCOUNT IDENTITY` (swapped) gives the command in order: with ids a
/// provider chose, it printed them bare, and pasted it ran `x` and split the
/// account id in two.
#[test]
fn link_swapped_prints_a_command_that_pastes_with_odd_ids_intact() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![person(ODD_IDENTITY, "ada@example.com", "ada@example.com")],
        vec![account(
            ODD_ACCOUNT,
            "ada.l@example.com",
            "ada.l@example.com",
        )],
    );
    let (code, out, err) = run(&config, &["link", ODD_ACCOUNT, ODD_IDENTITY]);
    assert_eq!(code, Some(1), "{out}{err}");
    let command = quoted_command(&err, "seatwarden link");
    assert_eq!(command, r"seatwarden link 'it'\''s $(x)' 'w 3'");
    assert_eq!(
        link_of(command),
        (ODD_IDENTITY.to_owned(), ODD_ACCOUNT.to_owned(), false)
    );

    // Run as printed, it links the two.
    let words = shell_split(command);
    let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    let (code, out, err) = run(&config, &args);
    assert_eq!(code, Some(0), "{out}{err}");
}

/// An id that starts with `-` is read as an option even quoted: the printed
/// command ends the options with `--` (and puts `--replace` before it).
#[test]
fn an_id_starting_with_a_dash_is_printed_after_a_double_dash() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![person("-abc", "ada@example.com", "ada@example.com")],
        vec![
            account(ODD_ACCOUNT, "ada.l@example.com", "ada.l@example.com"),
            account("w4", "ada@example.com", "ada@example.com"),
        ],
    );
    let (code, out, err) = run(&config, &["link", "--", ODD_ACCOUNT, "-abc"]);
    assert_eq!(code, Some(1), "{out}{err}");
    let command = quoted_command(&err, "seatwarden link");
    assert_eq!(command, "seatwarden link -- -abc 'w 3'");
    assert_eq!(
        link_of(command),
        ("-abc".to_owned(), ODD_ACCOUNT.to_owned(), false)
    );

    // Linked to another account already: the command with --replace.
    store_links(&dir.path().join("state.db"), &[("-abc", "w4")]);
    let (code, out, err) = run(&config, &["link", "--", "-abc", ODD_ACCOUNT]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("already linked"), "{err}");
    let explain = quoted_command(&err, "seatwarden explain");
    assert_eq!(explain, "seatwarden explain -- -abc");
    match parsed(explain) {
        Command::Explain { person, .. } => assert_eq!(person, "-abc"),
        other => panic!("{other:?}"),
    }
    let command = quoted_command(&err, "seatwarden link");
    assert_eq!(command, "seatwarden link --replace -- -abc 'w 3'");
    assert_eq!(
        link_of(command),
        ("-abc".to_owned(), ODD_ACCOUNT.to_owned(), true)
    );
    let words = shell_split(command);
    let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    let (code, out, err) = run(&config, &args);
    assert_eq!(code, Some(0), "{out}{err}");
}

/// `unlink IDENTITY` names the command that unlinks the person's account.
#[test]
fn unlink_given_a_persons_id_prints_the_account_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![person("00u1", "ada@example.com", "ada@example.com")],
        vec![account("-w;3", "ada@example.com", "ada@example.com")],
    );
    store_links(&dir.path().join("state.db"), &[("00u1", "-w;3")]);
    let (code, out, err) = run(&config, &["unlink", "00u1"]);
    assert_eq!(code, Some(1), "{out}{err}");
    let command = quoted_command(&err, "seatwarden unlink");
    assert_eq!(command, "seatwarden unlink -- '-w;3'");
    match parsed(command) {
        Command::Unlink { account, .. } => assert_eq!(account, "-w;3"),
        other => panic!("{other:?}"),
    }
}

/// A disputed match in the plan (two accounts share the person's address):
/// its `explain` and `link` commands carry the provider's id as one word.
#[test]
fn a_disputed_matchs_commands_carry_the_identity_as_one_word() {
    let mut ada = person(ODD_IDENTITY, "ada@example.com", "ada@example.com");
    ada.email = Some("ada@example.com".into());
    let directory = DirectorySnapshot {
        identities: vec![ada],
        complete: true,
    };
    let workspace = WorkspaceSnapshot {
        accounts: vec![
            account("w1", "ada.a@example.com", "ada@example.com"),
            account("w2", "ada.b@example.com", "ada@example.com"),
        ],
        groups: vec![],
    };
    let policy = PolicySettings {
        scope_groups: vec![],
        default_role: Role::Viewer,
        mappings: vec![],
        manage_roles: false,
    };
    let settings = PlanSettings {
        deprovision: DeprovisionAction::Deactivate,
        retention: Retention::default(),
        unmatched_accounts: UnmatchedAccounts::Report,
        manage_roles: false,
        protected: Protected::default(),
        admin_command: "sudo seatwarden-admin".to_owned(),
    };
    let desired = desired_state(&directory, &policy);
    let planned = plan(&desired, &directory, &workspace, &[], &[], &settings);
    let dispute = planned
        .drift
        .iter()
        .find(|d| d.kind == DriftKind::DisputedMatch && d.identity_id.is_some())
        .unwrap_or_else(|| panic!("{:?}", planned.drift));
    let link = quoted_command(&dispute.detail, "sudo seatwarden-admin link");
    assert_eq!(link, r"sudo seatwarden-admin link 'it'\''s $(x)' ACCOUNT");
    let explain = quoted_command(&dispute.detail, "sudo seatwarden-admin explain");
    assert_eq!(explain, r"sudo seatwarden-admin explain 'it'\''s $(x)'");
    // The admin command is the operator's own text: what follows `sudo` parses.
    let (identity, _, _) = link_of(&link["sudo ".len()..]);
    assert_eq!(identity, ODD_IDENTITY);
}

/// A workspace that refuses the token, with an error body that echoes the
/// request's bearer token back (a debugging proxy's habit).
async fn refusing_workspace() -> wiremock::MockServer {
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(
            wiremock::ResponseTemplate::new(401).set_body_json(serde_json::json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                "status": "401",
                "detail": "token t0ken is not valid (Authorization: Bearer t0ken)"
            })),
        )
        .mount(&server)
        .await;
    server
}

/// A reconcile run by hand that failed: `status` said `run 1 failed` and not
/// why; the reason its run recorded is on the line now (and `error` in the
/// JSON's `last_reconcile`), on one line, without the token.
#[tokio::test]
async fn status_says_why_the_last_reconcile_failed_reading_the_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let server = refusing_workspace().await;
    let config = crate::fixtures::ada_config(&server.uri(), dir.path(), "active");
    let store = seatwarden::store::Store::open(&config.state.path).unwrap();
    let failed = seatwarden::run::execute(&config, store, seatwarden::run::Mode::Reconcile).await;
    assert!(failed.is_err(), "the run failed");

    let status = crate::review_s62_status::status_now(&config);
    let text = seatwarden::daemon::status::render_text(&status);
    let line = text
        .lines()
        .find(|l| l.starts_with("Last reconcile:"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(" failed"), "{line}");
    assert!(line.contains("; error: reading the workspace: "), "{line}");
    assert!(line.contains("401"), "{line}");
    assert!(!text.contains("t0ken"), "{text}");
    let json = serde_json::to_value(&status).unwrap();
    let error = json["last_reconcile"]["error"].as_str().unwrap();
    assert!(error.starts_with("reading the workspace: "), "{error}");
    assert!(!error.contains("t0ken"), "{error}");
    assert!(!error.contains('\n'), "{error:?}");
}

/// A directory that cannot be read (its export gone): the line names it.
#[tokio::test]
async fn status_says_why_the_last_reconcile_failed_reading_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let workspace =
        crate::fixtures::sandbox("t0ken", seatwarden::model::WorkspaceSnapshot::default()).await;
    let config = crate::fixtures::ada_config(workspace.base_url().as_str(), dir.path(), "active");
    std::fs::remove_file(dir.path().join("directory.json")).unwrap();
    let store = seatwarden::store::Store::open(&config.state.path).unwrap();
    let failed = seatwarden::run::execute(&config, store, seatwarden::run::Mode::Reconcile).await;
    assert!(failed.is_err(), "the run failed");

    let text =
        seatwarden::daemon::status::render_text(&crate::review_s62_status::status_now(&config));
    let line = text
        .lines()
        .find(|l| l.starts_with("Last reconcile:"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("; error: reading the directory: "), "{line}");
    assert!(line.contains("directory.json"), "{line}");
    workspace.shutdown().await;
}

/// Answers `/Groups` in pages of two (`totalResults` 3), ahead of any other
/// `/Groups` answer mounted.
async fn mount_three_groups_in_pages(idp: &wiremock::MockServer) {
    let page = |start: usize, names: &[&str]| {
        let resources: Vec<serde_json::Value> = names
            .iter()
            .map(|name| serde_json::json!({"id": format!("g-{name}"), "displayName": name}))
            .collect();
        wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": 3, "startIndex": start,
            "itemsPerPage": resources.len(), "Resources": resources,
        }))
    };
    for (start, names) in [(1, &["Taskade Users", "Sales"][..]), (3, &["Support"][..])] {
        wiremock::Mock::given(wiremock::matchers::method("GET"))
            .and(wiremock::matchers::path("/scim/v2/Groups"))
            .and(wiremock::matchers::query_param(
                "startIndex",
                start.to_string(),
            ))
            .respond_with(page(start, names))
            .with_priority(1)
            .mount(idp)
            .await;
    }
}

/// `check-config --connect` against a SCIM directory reads every User and
/// every group's name, page by page, and said nothing until all was read:
/// it says on stderr when the directory's check starts and what it listed,
/// as a run's directory read does; stdout (the configuration) is unchanged.
#[tokio::test]
async fn check_config_connect_says_on_stderr_what_it_reads_of_the_directory() {
    let idp = wiremock::MockServer::start().await;
    crate::scim_directory::mount_people(&idp, &crate::scim_directory::THREE, 3).await;
    mount_three_groups_in_pages(&idp).await;
    let workspace = crate::fixtures::sandbox(
        "workspace-token",
        seatwarden::model::WorkspaceSnapshot::default(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    crate::scim_directory::small_config(dir.path(), &idp, &workspace, "page_size = 2\n", "");
    let config = dir.path().join("seatwarden.toml");

    let (plain, connected) = tokio::task::spawn_blocking(move || {
        (
            run(&config, &["check-config"]),
            run(&config, &["check-config", "--connect"]),
        )
    })
    .await
    .unwrap();
    let (code, out, err) = connected;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out, plain.1,
        "stdout is the configuration, as without --connect"
    );
    let checking = err
        .find("checking the directory")
        .unwrap_or_else(|| panic!("{err}"));
    let listed = err
        .find("directory groups listed")
        .unwrap_or_else(|| panic!("{err}"));
    assert!(checking < listed, "{err}");
    assert!(err.contains("groups=3"), "{err}");
    // Both Groups pages were read.
    let requests = idp.received_requests().await.unwrap();
    assert!(
        requests.iter().any(|r| r.url.path() == "/scim/v2/Groups"
            && r.url.query().is_some_and(|q| q.contains("startIndex=3"))),
        "{requests:?}"
    );
    workspace.shutdown().await;
}

/// A directory the source check rejected (an empty export): the reconcile
/// `succeeded` and planned nothing (exit 5), and `status` said `succeeded, no
/// actions`, as for a workspace in line. It says the snapshot was rejected and
/// why now (`last_reconcile_directory_rejected` in the JSON).
#[tokio::test]
async fn status_says_the_last_reconcile_rejected_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let workspace =
        crate::fixtures::sandbox("t0ken", seatwarden::model::WorkspaceSnapshot::default()).await;
    let config = crate::fixtures::ada_config(workspace.base_url().as_str(), dir.path(), "active");
    std::fs::write(dir.path().join("directory.json"), r#"{"users": []}"#).unwrap();
    let store = seatwarden::store::Store::open(&config.state.path).unwrap();
    let _ = seatwarden::run::execute(&config, store, seatwarden::run::Mode::Reconcile).await;

    let status = crate::review_s62_status::status_now(&config);
    let text = seatwarden::daemon::status::render_text(&status);
    let line = text
        .lines()
        .find(|l| l.starts_with("Last reconcile:"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(
            "its directory snapshot was REJECTED (the directory returned no identities; \
             nothing was planned from it)"
        ),
        "{line}"
    );
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(
        json["last_reconcile_directory_rejected"],
        "the directory returned no identities; nothing was planned from it"
    );
    workspace.shutdown().await;
}
