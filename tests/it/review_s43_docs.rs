//! Session 43: the README against the code, where a statement of it can be
//! checked mechanically. The configuration key table names every key the code
//! knows, and no key it does not; its literal defaults are the code's; each
//! directory connector's paragraph names every key of its `kind`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use seatwarden::config::Config;

use crate::troubleshooting::{code_spans, readme, rows, section};

/// A minimal valid configuration with every optional section present, so each
/// section's keys can be asked for; `extra` is TOML appended to the table named
/// `section` (written last, so it can add to it).
fn config_text(directory: &str, section: &str, extra: &str) -> String {
    let mut text = format!(
        "[directory]\n{directory}\n\n[workspace]\nurl = \"https://scim.example.com/scim/v2\"\ntoken = \"t\"\n\n[policy]\n\n[deprovision]\n\n[safety]\n\n[safety.circuit]\n\n[state]\n\n[schedule]\n\n[http]\n\n[report]\n\n[report.email]\nsmtp_url = \"smtps://mail.example.com:465\"\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]\n"
    );
    // Move the extra key into its table: TOML allows a table's keys only under
    // its own header, so the header is repeated by splitting the text there.
    let header = format!("[{section}]\n");
    let at = text
        .find(&header)
        .unwrap_or_else(|| panic!("no {header:?}"))
        + header.len();
    text.insert_str(at, &format!("{extra}\n"));
    text
}

fn load(text: &str) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seatwarden.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::write(dir.path().join("directory.json"), r#"{"users":[]}"#).unwrap();
    Config::load_with_env(&path, Some(HashMap::new())).map_err(|e| e.to_string())
}

/// The keys serde knows in `section` of a configuration with `directory`: the
/// list its "unknown field" error gives for a key no table has.
fn known_keys(directory: &str, section: &str) -> BTreeSet<String> {
    let error = load(&config_text(directory, section, "zz_not_a_key = 1"))
        .err()
        .unwrap_or_else(|| panic!("an unknown key in [{section}] loaded"));
    let (_, expected) = error
        .split_once("expected")
        .unwrap_or_else(|| panic!("no list of keys in {error:?}"));
    let keys: BTreeSet<String> = code_spans(expected).into_iter().collect();
    assert!(!keys.is_empty(), "no keys in {error:?}");
    keys
}

const FILE: &str = "kind = \"file\"\npath = \"directory.json\"";

/// Every key of the configuration, `section.key`, but the directory's (each
/// kind has its own) and the subtables.
fn code_keys() -> BTreeSet<String> {
    let tables = [
        "workspace",
        "policy",
        "deprovision",
        "safety",
        "safety.circuit",
        "state",
        "schedule",
        "http",
        "report",
        "report.email",
    ];
    let mut keys = BTreeSet::new();
    for table in tables {
        for key in known_keys(FILE, table) {
            let path = format!("{table}.{key}");
            if !tables.contains(&path.as_str()) {
                keys.insert(path);
            }
        }
    }
    keys
}

/// The README's configuration table: each key of a row's first cell with the
/// row's default cell for it. `a.b.c` / `d` / `e` is shorthand for `a.b.c`,
/// `a.b.d`, `a.b.e`; a default cell of as many `/`-separated code spans gives
/// one to each key, else the whole cell is every key's.
fn table() -> BTreeMap<String, String> {
    let readme = readme();
    let lines = section(&readme, "## Configuration");
    let mut keys = BTreeMap::new();
    for row in rows(&lines) {
        if !row[0].starts_with('`') {
            continue;
        }
        let names = code_spans(&row[0]);
        let prefix = names[0]
            .trim_start_matches("[[")
            .trim_end_matches("]]")
            .rsplit_once('.')
            .map(|(p, _)| p.to_owned())
            .unwrap_or_default();
        let defaults: Vec<&str> = row[1].split(" / ").collect();
        for (i, name) in names.iter().enumerate() {
            let name = name.trim_start_matches("[[").trim_end_matches("]]");
            let key = if name.contains('.') {
                name.to_owned()
            } else {
                format!("{prefix}.{name}")
            };
            let default = if defaults.len() == names.len() {
                defaults[i]
            } else {
                row[1].as_str()
            };
            keys.insert(key, default.to_owned());
        }
    }
    assert!(keys.len() > 40, "the configuration table was not found");
    keys
}

#[test]
fn the_configuration_table_names_every_key_the_code_knows_and_no_other() {
    let code = code_keys();
    let table = table();
    let missing: Vec<&String> = code.iter().filter(|k| !table.contains_key(*k)).collect();
    let unknown: Vec<&String> = table
        .keys()
        .filter(|k| !k.starts_with("directory.") && !code.contains(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "keys the code knows that README's configuration table lacks: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "keys README's configuration table names that the code does not know: {unknown:?}"
    );
}

/// A value as the configuration holds it, written as the table writes it.
fn shown(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

#[test]
fn the_configuration_tables_literal_defaults_are_the_codes() {
    let config = load(&config_text(FILE, "workspace", "")).unwrap();
    let json = serde_json::to_value(&config).unwrap();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (key, default) in table() {
        // Only a default that is one code span is a value: `—`, `none`, prose
        // ("workspace URL host") and another key's name (`schedule.timezone`) are not.
        let spans = code_spans(&default);
        if spans.len() != 1
            || format!("`{}`", spans[0]) != default
            || spans[0].contains('.') && !spans[0].ends_with(".db")
        {
            continue;
        }
        let mut value = &json;
        for part in key.split('.') {
            value = &value[part];
        }
        if value.is_null() {
            continue;
        }
        let actual = shown(value);
        // A relative default path is held resolved against the configuration's folder.
        let same = actual == spans[0] || actual.ends_with(&format!("/{}", spans[0]));
        if !same {
            wrong.push(format!("{key}: README `{}`, code {actual:?}", spans[0]));
        }
        checked += 1;
    }
    assert!(checked > 30, "only {checked} defaults were compared");
    assert!(wrong.is_empty(), "README's defaults differ: {wrong:#?}");
}

/// Each connector's paragraph in "Directory connectors": from its bold heading
/// (`kind = "…"`) to the next one.
fn connector_text(kind: &str) -> String {
    let readme = readme();
    let lines = section(&readme, "## Directory connectors");
    let marker = format!("(`kind = \"{kind}\"`)");
    let mut out = String::new();
    let mut inside = false;
    for line in lines {
        if line.starts_with("**") {
            inside = line.contains(&marker);
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        !out.is_empty(),
        "README has no paragraph for kind = {kind:?}"
    );
    out
}

#[test]
fn each_directory_connectors_paragraph_names_every_key_of_its_kind() {
    let readme = readme();
    let intro: Vec<String> = section(&readme, "## Directory connectors")
        .into_iter()
        .take_while(|l| !l.starts_with("**"))
        .flat_map(code_spans)
        .collect();
    let configuration = table();
    let kinds = [
        (
            "okta",
            "kind = \"okta\"\nurl = \"https://acme.okta.com\"\ntoken = \"t\"",
        ),
        (
            "entra",
            "kind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"",
        ),
        (
            "ldap",
            "kind = \"ldap\"\nurl = \"ldaps://dc.example.com\"\nbind_dn = \"CN=a,DC=example,DC=com\"\nbind_password = \"p\"\nbase_dn = \"DC=example,DC=com\"",
        ),
        (
            "scim",
            "kind = \"scim\"\nurl = \"https://idp.example.com/scim/v2\"\ntoken = \"t\"",
        ),
    ];
    let mut missing = Vec::new();
    for (kind, directory) in kinds {
        let spans: BTreeSet<String> = code_spans(&connector_text(kind)).into_iter().collect();
        for key in known_keys(directory, "directory") {
            let named = key == "kind"
                || spans.contains(&key)
                || spans.iter().any(|s| {
                    s.starts_with(&format!("{key} "))
                        || s.starts_with(&format!("{key}/"))
                        || s.ends_with(&format!("/{key}"))
                })
                || intro.contains(&key)
                || configuration.contains_key(&format!("directory.{key}"))
                || readme.contains(&format!("`directory.{key}`"));
            if !named {
                missing.push(format!("{kind}: {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "directory keys README's \"Directory connectors\" does not name: {missing:?}"
    );
}

/// "`max_concurrency` (8)", "`pagination` (`auto`, …)": the value a connector's
/// paragraph gives in brackets right after a key, when it is a plain value.
fn bracketed_defaults(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("` (") {
        let before = &rest[..at];
        let key = before.rsplit('`').next().unwrap_or_default().to_owned();
        let after = &rest[at + 3..];
        let value: String = match after.strip_prefix('`') {
            Some(code) => code.split('`').next().unwrap_or_default().to_owned(),
            None => after
                .split(|c: char| c == ')' || c == ';' || c == ',' || c.is_whitespace())
                .next()
                .unwrap_or_default()
                .to_owned(),
        };
        let is_key = !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        // A plain value is a number or a duration ("8", "30s"); prose is not one.
        let is_value = after.starts_with('`') || value.starts_with(|c: char| c.is_ascii_digit());
        if is_key && is_value && !value.is_empty() && !value.contains(' ') {
            out.push((key, value));
        }
        rest = after;
    }
    out
}

#[test]
fn the_defaults_each_directory_connectors_paragraph_gives_are_the_codes() {
    let kinds = [
        (
            "okta",
            "kind = \"okta\"\nurl = \"https://acme.okta.com\"\ntoken = \"t\"",
        ),
        (
            "entra",
            "kind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"",
        ),
        (
            "ldap",
            "kind = \"ldap\"\nurl = \"ldaps://dc.example.com\"\nbind_dn = \"CN=a,DC=example,DC=com\"\nbind_password = \"p\"\nbase_dn = \"DC=example,DC=com\"",
        ),
        (
            "scim",
            "kind = \"scim\"\nurl = \"https://idp.example.com/scim/v2\"\ntoken = \"t\"",
        ),
    ];
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (kind, directory) in kinds {
        let config = load(&config_text(directory, "workspace", "")).unwrap();
        let json = serde_json::to_value(&config).unwrap();
        for (key, value) in bracketed_defaults(&connector_text(kind)) {
            let actual = &json["directory"][key.as_str()];
            // A key the configuration sets is no default.
            let set = directory
                .lines()
                .any(|l| l.starts_with(&format!("{key} =")));
            if actual.is_null() || set {
                continue;
            }
            checked += 1;
            if shown(actual) != value {
                wrong.push(format!("{kind}: {key}: README ({value}), code {actual}"));
            }
        }
    }
    assert!(checked >= 12, "only {checked} defaults were compared");
    assert!(
        wrong.is_empty(),
        "README's connector defaults differ: {wrong:#?}"
    );
}

/// `demo` and `sandbox` refuse `--config` (exit 64, as README's "Upgrading"
/// says); their `--help` lists the global option all the same, so it must say so.
#[test]
fn the_help_of_demo_and_sandbox_says_they_refuse_the_config_it_lists() {
    for (command, other) in [("demo", "--dir"), ("sandbox", "--seed")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .args([command, "--help"])
            .env_remove("SEATWARDEN_CONFIG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let help = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = help.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains("--config <CONFIG>"))
            .unwrap_or_else(|| panic!("{command} --help lists no --config:\n{help}"));
        // The option's text, wrapped onto the next line or not.
        let line = lines[at..(at + 2).min(lines.len())].join(" ");
        assert!(
            line.contains(&format!("`{command}`")) && line.contains("refuse"),
            "{command} --help offers --config without saying {command} refuses it: {line:?}"
        );
        let refused = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .args([
                command,
                "--config",
                "seatwarden.toml",
                other,
                "/nonexistent/x",
            ])
            .env_remove("SEATWARDEN_CONFIG")
            .output()
            .unwrap();
        assert_eq!(refused.status.code(), Some(64), "{command} --config");
    }
}

/// The codes of `cli::exit`, as its source declares them.
fn declared_exit_codes() -> BTreeSet<u8> {
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli.rs"),
    )
    .unwrap();
    let module = source
        .split("pub mod exit {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .expect("src/cli.rs has no `pub mod exit`");
    module
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split_once(": u8 = "))
        .map(|(_, n)| n.trim_end_matches(';').parse().unwrap())
        .collect()
}

#[test]
fn readmes_exit_codes_are_the_codes_the_binary_declares_and_its_help_lists() {
    let readme = readme();
    let documented: BTreeSet<u8> = rows(&section(&readme, "## Exit codes"))
        .iter()
        .filter_map(|row| row[0].parse().ok())
        .collect();
    let declared = declared_exit_codes();
    assert!(declared.len() >= 10, "{declared:?}");
    assert_eq!(
        documented, declared,
        "README's exit code table against cli::exit"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--help")
        .env_remove("SEATWARDEN_CONFIG")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let listed: BTreeSet<u8> = help
        .split("Exit codes:")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| !l.starts_with(|c: char| c.is_alphabetic()))
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(
        listed, declared,
        "seatwarden --help's exit codes against cli::exit"
    );
}

/// The minutes README's "Interop suite" gives `.ci/run`'s outer limits are the
/// `within SECONDS` of its interop and render steps.
#[test]
fn readmes_ci_step_limits_are_the_ones_ci_run_sets() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    let limit = |script: &str| -> u64 {
        ci.lines()
            .filter_map(|l| l.trim().strip_prefix("within "))
            .find(|l| l.contains(script))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!(".ci/run runs {script} within no limit"))
    };
    let readme = readme().replace('\n', " ");
    let claim = format!(
        "`.ci/run` cuts off the whole interop step after {} and the render check after {}.",
        limit("scripts/interop.sh") / 60,
        limit("scripts/render-html-check.sh") / 60
    );
    assert!(readme.contains(&claim), "README does not say {claim:?}");
}

/// `config/seatwarden.example.toml` says "commented keys show their defaults":
/// each `# key = value` line outside `[directory]` (whose kinds it sketches)
/// whose key has a default gives that default.
#[test]
fn the_production_examples_commented_keys_show_the_codes_defaults() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/seatwarden.example.toml");
    let example = std::fs::read_to_string(&path).unwrap();
    assert!(example.contains("commented keys show their defaults"));
    let config = load(&config_text(FILE, "workspace", "")).unwrap();
    let defaults = serde_json::to_value(&config).unwrap();
    let mut table = String::new();
    let (mut checked, mut wrong) = (0, Vec::new());
    for line in example.lines() {
        let bare = line.trim_start_matches("# ").trim();
        if bare.starts_with('[') && bare.ends_with(']') {
            table = bare.trim_matches(['[', ']']).to_owned();
            continue;
        }
        let Some(commented) = line.strip_prefix("# ") else {
            continue;
        };
        let Some((key, rest)) = commented.split_once(" = ") else {
            continue;
        };
        if table == "directory" || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        let value = rest.split("  #").next().unwrap().trim();
        let parsed: toml::Table = toml::from_str(&format!("v = {value}")).unwrap();
        let given = serde_json::to_value(&parsed["v"]).unwrap();
        let mut default = &defaults;
        for part in table.split('.').chain([key]) {
            default = &default[part];
        }
        // A key the test's own configuration sets (a required one) has no default.
        let set = config_text(FILE, "workspace", "").contains(&format!("\n{key} = "));
        if default.is_null() || set {
            continue;
        }
        checked += 1;
        let same = match (given.as_f64(), default.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => &given == default,
        };
        if !same {
            wrong.push(format!("{table}.{key}: example {given}, default {default}"));
        }
    }
    assert!(checked >= 15, "only {checked} commented keys compared");
    assert!(
        wrong.is_empty(),
        "commented keys that are no default: {wrong:#?}"
    );
}

/// A reconcile whose writes all failed has nothing to verify: it must not warn
/// that "the workspace stopped answering during verification: 0 of 0 changes
/// were not read" (the outage was the writes', which their own lines report).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_verification_outage_is_reported_when_nothing_was_verified() {
    const TOKEN: &str = "s43-docs-token";
    let sandbox = crate::fixtures::demo_sandbox(
        TOKEN,
        seatwarden::sandbox::Faults {
            rate_5xx: 1.0,
            writes_only: true,
            ..seatwarden::sandbox::Faults::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    crate::fixtures::copy_demo_files(dir.path());
    let (config, url) = (
        dir.path().join("seatwarden.toml"),
        sandbox.base_url().to_string(),
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(&config)
            .arg("reconcile")
            .env_remove("SEATWARDEN_CONFIG")
            .env("SEATWARDEN__WORKSPACE__URL", url)
            .env("SEATWARDEN__WORKSPACE__TOKEN", TOKEN)
            .env("SEATWARDEN__WORKSPACE__RETRIES", "0")
            .env("SEATWARDEN__STATE__PATH", "state.db")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        matches!(output.status.code(), Some(4 | 6)),
        "{:?}: {stderr}",
        output.status.code()
    );
    assert!(stderr.contains("action failed"), "{stderr}");
    assert!(
        !stderr.contains("during verification"),
        "a verification outage reported for a run that verified nothing: {stderr}"
    );
}

/// The metrics README's "Running as a service" names are those the daemon's
/// catalog describes (`src/daemon/catalog.rs`, every metric's `# HELP`).
#[test]
fn readmes_metrics_are_the_ones_the_daemon_describes() {
    let catalog = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/daemon/catalog.rs"),
    )
    .unwrap();
    let described: BTreeSet<String> = catalog
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"')?.strip_suffix("\","))
        .filter(|name| name.starts_with("seatwarden_"))
        .map(str::to_owned)
        .collect();
    assert!(described.len() >= 20, "{described:?}");
    let readme = readme();
    let text = section(&readme, "## Running as a service: `seatwarden daemon`").join("\n");
    let named: BTreeSet<String> = code_spans(&text)
        .into_iter()
        .filter_map(|span| {
            let name: String = span
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            (name.starts_with("seatwarden_") && !name.contains("__")).then_some(name)
        })
        .collect();
    let undocumented: Vec<_> = described.difference(&named).collect();
    let unknown: Vec<_> = named.difference(&described).collect();
    assert!(
        undocumented.is_empty(),
        "metrics README does not name: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "metrics README names that the daemon does not describe: {unknown:?}"
    );
}

/// README: "`--token T` or `SEATWARDEN_SANDBOX_TOKEN` sets one". A token from
/// the variable must not be announced as "from --token", which no one gave.
#[test]
fn the_sandbox_names_the_variable_its_token_may_come_from() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["sandbox", "--port", "0"])
        .env_remove("SEATWARDEN_CONFIG")
        .env("SEATWARDEN_SANDBOX_TOKEN", "from-the-variable")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.contains("sandbox SCIM 2.0 workspace at"), "{line}");
    assert!(
        !line.contains("from-the-variable"),
        "the token is echoed: {line}"
    );
    assert!(line.contains("SEATWARDEN_SANDBOX_TOKEN"), "{line}");
}

/// Every file README links to, or names as a path of the repository in code
/// (`scripts/…`, `config/…`), is there.
#[test]
fn every_repository_path_readme_names_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = readme();
    let mut paths: BTreeSet<String> = readme
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .filter(|target| !target.starts_with("http") && !target.starts_with('#'))
        .map(|target| target.split('#').next().unwrap_or_default().to_owned())
        .collect();
    paths.extend(code_spans(&readme).into_iter().filter(|span| {
        ["scripts/", "config/", "systemd/", "src/", "tests/"]
            .iter()
            .any(|dir| span.starts_with(dir))
            && !span.contains(char::is_whitespace)
    }));
    assert!(paths.len() > 10, "{paths:?}");
    let missing: Vec<&String> = paths.iter().filter(|p| !root.join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "README names paths that are not there: {missing:?}"
    );
}

/// The quickstart's first `plan` against a mistyped `workspace.url` fails before
/// reading anything; once the URL is fixed, `plan` runs. The state database held
/// nothing of the URL it recorded, so there is nothing to protect, and an
/// operator is not sent to `reconcile --workspace-moved` (which writes) to get
/// past their typo. One that holds a run's snapshot stays bound to its URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_database_that_never_read_its_workspace_follows_the_fixed_url() {
    const TOKEN: &str = "s43-docs-moved";
    let sandbox =
        crate::fixtures::demo_sandbox(TOKEN, seatwarden::sandbox::Faults::default()).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = crate::fixtures::demo_env(
        dir.path(),
        &sandbox,
        TOKEN,
        &[("SEATWARDEN__WORKSPACE__RETRIES", "0")],
    );
    let with_url = |url: String| -> Vec<(String, String)> {
        env.iter()
            .map(|(k, v)| match k.as_str() {
                "SEATWARDEN__WORKSPACE__URL" => (k.clone(), url.clone()),
                _ => (k.clone(), v.clone()),
            })
            .collect()
    };
    let run = |env: Vec<(String, String)>| {
        let dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || crate::fixtures::seatwarden_in(&dir, &env, &["plan"]))
    };
    let typo = format!("http://127.0.0.1:{closed}/scim/v2");
    let (code, stderr) = run(with_url(typo.clone())).await.unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("check the host and port in workspace.url"),
        "{stderr}"
    );
    let fixed = sandbox.base_url().to_string();
    let (code, stderr) = run(with_url(fixed)).await.unwrap();
    assert_eq!(code, Some(0), "the fixed URL is refused: {stderr}");
    // Now the database holds the sandbox's snapshot: another URL is refused.
    let (code, stderr) = run(with_url(typo)).await.unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("reconcile --workspace-moved"), "{stderr}");
}
