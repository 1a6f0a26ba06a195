#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Session 64: `check-config --connect`'s progress, the sandbox's `/Schemas`,
//! and ids with control characters in what seatwarden prints.
//!
//! - `check-config --connect` listed a SCIM directory's every User and every
//!   Group (minutes for 100,000 people) without a word until the end: the
//!   client's `users_and_active` and `group_names` dropped the progress hook.
//!   Each page is now counted on a terminal, on the line a run's workspace read
//!   uses; piped, stderr keeps to its log lines.
//! - The sandbox serves `groups` on Users, but its `/Schemas` did not name it.
//! - An id holding a control character was printed raw inside the `link`,
//!   `unlink` and `explain` commands seatwarden prints (an escape sequence
//!   reached the terminal, a line break cut the command), and `explain` and
//!   the report's PROTECTED BY PERSON made the ids printable (U+FFFD) before
//!   quoting them, so the command named another id. Such an id is now written
//!   in bash's `$'…'`, which gives it back whole.

use std::process::{Command, Stdio};
use std::sync::Mutex;

use seatwarden::config::Config;
use seatwarden::model::{Account, WorkspaceGroup, WorkspaceSnapshot};
use seatwarden::workspace::Progress;

const TOKEN: &str = "s64-token";

fn account(id: &str, user_name: &str) -> Account {
    Account {
        id: id.into(),
        user_name: user_name.into(),
        external_id: None,
        given_name: None,
        family_name: None,
        display_name: None,
        email: Some(user_name.into()),
        active: true,
        roles: vec!["Viewer".into()],
    }
}

/// Five Users, all in "Taskade Users"; three Groups.
fn five_people() -> WorkspaceSnapshot {
    let accounts: Vec<Account> = (1..=5)
        .map(|n| account(&format!("u{n}"), &format!("p{n}@example.com")))
        .collect();
    let group = |id: &str, name: &str, members: Vec<String>| WorkspaceGroup {
        id: id.into(),
        display_name: name.into(),
        members,
    };
    WorkspaceSnapshot {
        groups: vec![
            group(
                "g1",
                "Taskade Users",
                accounts.iter().map(|a| a.id.clone()).collect(),
            ),
            group("g2", "Engineering", vec!["u1".into()]),
            group("g3", "Design", Vec::new()),
        ],
        accounts,
    }
}

/// A configuration in `dir` reading the sandbox at `url` as a SCIM directory,
/// two objects a page, one page at a time, and as the workspace.
fn scim_directory_config(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("seatwarden.toml");
    std::fs::write(
        &path,
        format!(
            "[directory]\nkind = \"scim\"\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\n\
             page_size = 2\nmax_concurrency = 1\nrequests_per_second = 0\n\n\
             [workspace]\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\n\n\
             [state]\npath = \"state.db\"\n\n\
             [policy]\nscope_groups = [\"Taskade Users\"]\ndefault_role = \"Viewer\"\n"
        ),
    )
    .unwrap();
    // Else a warning that the tokens are readable by all comes first.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

/// A SCIM directory's probe (every User) and group listing tell the hook after
/// each page, with the pages and objects so far and the `totalResults`.
/// Before, the hook was dropped: nothing was told until the end.
#[tokio::test]
async fn a_scim_directorys_listings_report_each_page_with_running_counts() {
    let sandbox = crate::fixtures::sandbox(TOKEN, five_people()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = scim_directory_config(dir.path(), sandbox.base_url().as_str());
    let config = Config::load_with_env(&path, Some(Default::default())).unwrap();
    let directory = config.directory();
    let told: Mutex<Vec<Progress>> = Mutex::new(Vec::new());
    let hook = |p: Progress| told.lock().unwrap().push(p);

    directory.probe(&hook).await.unwrap();
    let people = std::mem::take(&mut *told.lock().unwrap());
    let seen: Vec<(&str, u64, u64, Option<u64>)> = people
        .iter()
        .map(|p| (p.what, p.pages, p.objects, p.total))
        .collect();
    assert_eq!(
        seen,
        [
            ("people", 1, 2, Some(5)),
            ("people", 2, 4, Some(5)),
            ("people", 3, 5, Some(5)),
        ]
    );

    let listed = directory.group_names(&hook).await.unwrap().unwrap();
    assert_eq!(listed.names.len(), 3);
    let groups = std::mem::take(&mut *told.lock().unwrap());
    let seen: Vec<(&str, u64, u64, Option<u64>)> = groups
        .iter()
        .map(|p| (p.what, p.pages, p.objects, p.total))
        .collect();
    assert_eq!(seen, [("groups", 1, 2, Some(3)), ("groups", 2, 3, Some(3))]);
    sandbox.shutdown().await;
}

/// `check-config --connect` against a SCIM directory: on a terminal, each
/// page's count on one line rewritten in place (`reading directory people:
/// 5/5 objects, 3 pages`), ended before the next log line; piped, no such
/// line and no carriage return, only the log's start and end lines. Before,
/// the terminal showed nothing between `checking the directory` and the end.
#[tokio::test]
async fn check_config_connect_counts_a_scim_directorys_pages_on_a_terminal_only() {
    let sandbox = crate::fixtures::sandbox(TOKEN, five_people()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = scim_directory_config(dir.path(), sandbox.base_url().as_str());
    let env = [("RUST_LOG", "warn,seatwarden=info")];

    let line = format!(
        "{} --config {} check-config --connect",
        env!("CARGO_BIN_EXE_seatwarden"),
        path.display()
    );
    let mut script = Command::new("script");
    script
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .current_dir(dir.path())
        .envs(env)
        .env_remove("SEATWARDEN_CONFIG")
        .stdin(Stdio::null());
    let terminal = tokio::task::spawn_blocking(move || {
        script
            .output()
            .unwrap_or_else(|e| panic!("util-linux `script` gives the test a terminal: {e}"))
    })
    .await
    .unwrap();
    let shown = String::from_utf8_lossy(&terminal.stdout);
    assert_eq!(terminal.status.code(), Some(0), "{shown}");
    for page in [
        "\r  reading directory people: 2/5 objects, 1 pages   ",
        "\r  reading directory people: 4/5 objects, 2 pages   ",
        "\r  reading directory people: 5/5 objects, 3 pages   ",
        "\r  reading directory groups: 2/3 objects, 1 pages   ",
        "\r  reading directory groups: 3/3 objects, 2 pages   ",
    ] {
        assert!(shown.contains(page), "no {page:?} in {shown:?}");
    }
    // Each count ended by a line break before the log line that follows it.
    let people = shown.find("people: 5/5 objects, 3 pages").unwrap();
    let probed = shown.find("directory probed").unwrap();
    assert!(shown[people..probed].contains('\n'), "{shown:?}");
    let groups = shown.find("groups: 3/3 objects, 2 pages").unwrap();
    let listed = shown.find("directory groups listed").unwrap();
    assert!(shown[groups..listed].contains('\n'), "{shown:?}");

    let piped = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(&path)
            .args(["check-config", "--connect"])
            .envs(env)
            .env_remove("SEATWARDEN_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert_eq!(piped.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("reading directory"), "{stderr}");
    assert!(!stderr.contains('\r'), "{stderr:?}");
    for logged in [
        "checking the directory",
        "directory probed",
        "directory groups listed",
    ] {
        assert!(stderr.contains(logged), "no {logged:?} in {stderr}");
    }
    assert!(
        stderr.contains("GET /Users, all pages (5 Users, 0 without active)"),
        "{stderr}"
    );
    sandbox.shutdown().await;
}

/// The User schema the sandbox serves names `groups`, read-only, with the
/// sub-attributes a User's `groups` come with; every key of a served User's
/// `groups` entries is one of them.
#[tokio::test]
async fn the_sandboxs_served_user_schema_names_the_groups_it_serves() {
    let sandbox = crate::fixtures::sandbox(TOKEN, five_people()).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .tls_backend_rustls()
        .build()
        .unwrap();
    let base = sandbox.base_url().as_str().trim_end_matches('/').to_owned();
    let get = |path: String| {
        let request = http.get(format!("{base}{path}")).bearer_auth(TOKEN);
        async move {
            request
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let schema = get("/Schemas/urn:ietf:params:scim:schemas:core:2.0:User".into()).await;
    let groups = schema["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "groups")
        .unwrap_or_else(|| panic!("no groups in {schema}"))
        .clone();
    assert_eq!(groups["type"], "complex");
    assert_eq!(groups["multiValued"], true);
    assert_eq!(groups["mutability"], "readOnly");
    let subs: Vec<String> = groups["subAttributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(subs, ["value", "$ref", "display", "type"]);

    let user = get("/Users/u1".into()).await;
    let served = user["groups"].as_array().unwrap();
    assert_eq!(served.len(), 2, "{user}");
    for entry in served {
        for key in entry.as_object().unwrap().keys() {
            assert!(subs.contains(key), "{key} of {entry} is not in the schema");
        }
        assert!(["direct", "indirect"].contains(&entry["type"].as_str().unwrap()));
    }
    sandbox.shutdown().await;
}

/// The words bash makes of `command` (a line seatwarden printed, its first word
/// `seatwarden`), as bytes.
fn bash_words(command: &str) -> Vec<String> {
    let rest = command.strip_prefix("seatwarden ").unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("printf '%s\\0' {rest}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{command}: {out:?}");
    let mut words: Vec<String> = out
        .stdout
        .split(|b| *b == 0)
        .map(|w| String::from_utf8(w.to_vec()).unwrap())
        .collect();
    assert_eq!(words.pop().as_deref(), Some(""));
    words
}

/// The person's id (an OSC title escape, a bell, a line break) and the ids
/// of the two accounts that may be theirs (a screen-clearing CSI; a line
/// break and a tab).
const ADA: &str = "ada\u{1b}]0;pwned\u{7}\n1";
const ONE: &str = "w\u{1b}[2J 1";
const TWO: &str = "w\n\t2";
/// An account nobody in the directory matches (a colour escape, DEL, a C1 CSI).
const ORPHAN: &str = "orph\u{1b}[31m\u{7f}\u{9b}0m";

/// A SCIM directory of Ada, with her id (a sandbox: a directory file refuses
/// such an id), and a sandbox workspace of the three accounts. Returns both
/// and the configuration path.
async fn control_character_ids(
    dir: &std::path::Path,
) -> (
    seatwarden::sandbox::Sandbox,
    seatwarden::sandbox::Sandbox,
    std::path::PathBuf,
) {
    let mut ada = account(ADA, "ada@example.com");
    ada.external_id = None;
    let directory = crate::fixtures::sandbox(
        TOKEN,
        WorkspaceSnapshot {
            groups: vec![WorkspaceGroup {
                id: "g1".into(),
                display_name: "Taskade Users".into(),
                members: vec![ADA.into()],
            }],
            accounts: vec![ada],
        },
    )
    .await;
    // Both match her email, neither her userName: disputed.
    let mut one = account(ONE, "ada.one@example.com");
    one.email = Some("ada@example.com".into());
    let mut two = account(TWO, "ada.two@example.com");
    two.email = Some("ADA@example.com".into());
    let workspace = crate::fixtures::sandbox(
        TOKEN,
        WorkspaceSnapshot {
            accounts: vec![one, two, account(ORPHAN, "orphan@example.com")],
            groups: Vec::new(),
        },
    )
    .await;
    let path = dir.join("seatwarden.toml");
    std::fs::write(
        &path,
        format!(
            "[directory]\nkind = \"scim\"\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n\n\
             [workspace]\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n\n\
             [state]\npath = \"state.db\"\n\n\
             [policy]\nscope_groups = [\"Taskade Users\"]\ndefault_role = \"Viewer\"\n\n\
             [safety]\nsettle = \"0s\"\n",
            directory.base_url(),
            workspace.base_url()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    (directory, workspace, path)
}

/// Runs the binary on `config` with `args`: its stdout and stderr.
async fn run(config: &std::path::Path, args: &[&str]) -> (String, String) {
    let config = config.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(&config)
            .args(&args)
            .env_remove("SEATWARDEN_CONFIG")
            .env("RUST_LOG", "warn,seatwarden=info")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// The `link` commands `explain` prints for a person whose id holds an escape
/// sequence and a line break, disputed between two accounts whose ids do too,
/// are one line each, and bash gives back the exact ids; so does the `link`
/// command `explain` prints for one of the accounts. Before, the ids were made printable
/// first (U+FFFD for each such character): pasted, `link` named ids that do
/// not exist.
#[tokio::test]
async fn explains_commands_give_back_ids_with_control_characters_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (directory, workspace, config) = control_character_ids(dir.path()).await;
    let (_, stderr) = run(&config, &["plan"]).await;
    assert!(stderr.contains("run "), "{stderr}");

    let (stdout, stderr) = run(&config, &["explain", ADA]).await;
    let commands: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("seatwarden link "))
        .collect();
    assert_eq!(commands.len(), 2, "{stdout}{stderr}");
    let mut accounts: Vec<String> = commands
        .iter()
        .map(|command| {
            let words = bash_words(command);
            assert_eq!(words[..2], ["link", ADA], "{command}");
            words[2].clone()
        })
        .collect();
    accounts.sort();
    assert_eq!(accounts, [TWO, ONE]);

    // Asked of one of the accounts: the command that says which is hers.
    let (stdout, stderr) = run(&config, &["explain", ONE]).await;
    let command = stdout
        .split('`')
        .find(|part| part.starts_with("seatwarden link $'"))
        .unwrap_or_else(|| panic!("no link command: {stdout}{stderr}"));
    assert_eq!(bash_words(command), ["link", ADA, "ACCOUNT"]);
    directory.shutdown().await;
    workspace.shutdown().await;
}

/// What the operator reads of a run over such ids (`plan`'s report, `report`,
/// `explain` of each, `status`, `digest`) holds no ESC, and no line break or control
/// character inside a `$'…'` word. Before, `explain`'s `disputed: … `seatwarden
/// explain ID`` line printed the id raw: its ESC reached the terminal.
#[tokio::test]
async fn nothing_printed_of_ids_with_control_characters_holds_an_escape() {
    let dir = tempfile::tempdir().unwrap();
    let (directory, workspace, config) = control_character_ids(dir.path()).await;
    let mut printed = Vec::new();
    for args in [
        &["plan"][..],
        &["report"],
        &["explain", ADA],
        &["explain", ONE],
        &["explain", TWO],
        &["explain", ORPHAN],
        &["status"],
        &["digest"],
    ] {
        let (stdout, stderr) = run(&config, args).await;
        printed.push((args, stdout, stderr));
    }
    for (args, stdout, stderr) in &printed {
        for text in [stdout, stderr] {
            assert!(!text.contains('\u{1b}'), "{args:?}: {text:?}");
            assert!(!text.contains('\u{9b}'), "{args:?}: {text:?}");
            for (at, _) in text.match_indices("$'") {
                let word = &text[at..];
                let end = word[2..].find('\'').map_or(word.len(), |e| e + 3);
                assert!(
                    !word[..end].chars().any(char::is_control),
                    "{args:?}: {:?}",
                    &word[..end]
                );
            }
        }
    }
    // The report names the dispute with a command that gives the id back.
    let (_, plan_out, plan_err) = &printed[0];
    let plan = format!("{plan_out}{plan_err}");
    let explain = plan
        .split('`')
        .find(|part| part.starts_with("seatwarden explain $'"))
        .unwrap_or_else(|| panic!("no explain command: {plan}"));
    assert_eq!(bash_words(explain), ["explain", ADA]);
    directory.shutdown().await;
    workspace.shutdown().await;
}
