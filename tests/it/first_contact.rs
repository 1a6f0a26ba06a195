//! A newcomer's first minutes: a configuration with a misspelt key, a workspace
//! URL that stops short of the SCIM base, and the demo. Each mistake must be
//! answered with what to change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use seatwarden::config::Config;
use seatwarden::retry::Transient;
use seatwarden::run::{self, Mode};
use seatwarden::sandbox::Faults;
use seatwarden::store::Store;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fixtures::{ada_config, demo_sandbox};

const HINT: &str = "`workspace.url` must be the SCIM base URL, up to and including the \
                    version, e.g. https://www.taskade.com/scim/v2";

fn seatwarden(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(args)
        .env_remove("SEATWARDEN_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn a_misspelt_directory_key_is_named_with_the_keys_accepted_there() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("directory.json"), r#"{"users": []}"#).unwrap();
    let config = dir.path().join("seatwarden.toml");
    std::fs::write(
        &config,
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\nkindd = \"json\"\n\n\
         [workspace]\nurl = \"https://www.taskade.com/scim/v2\"\ntoken = \"t0ken\"\n",
    )
    .unwrap();
    let output = seatwarden(&["--config", config.to_str().unwrap(), "check-config"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: key `directory.kindd`: unknown field `kindd`, expected one of `kind`, `path` \
             (the keys of a `kind = \"file\"` directory)",
            config.display()
        )),
        "{stderr}"
    );
}

/// A plan against `url` with Ada's one-person configuration: the error it fails with.
async fn plan_error(url: &str) -> run::RunError {
    let dir = tempfile::tempdir().unwrap();
    let config = ada_config(url, dir.path(), "ACTIVE");
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    run::execute(&config, store, Mode::Plan).await.unwrap_err()
}

#[tokio::test]
async fn a_workspace_url_without_the_scim_path_names_the_url_asked_and_the_base_url() {
    let sandbox = demo_sandbox("t0ken", Faults::default()).await;
    let root = sandbox
        .base_url()
        .as_str()
        .trim_end_matches('/')
        .trim_end_matches("/scim/v2")
        .to_owned();
    let error = plan_error(&root).await;
    let message = error.to_string();
    assert!(
        message.contains(&format!(
            "HTTP 404: no endpoint /Users; asked {root}/Users: {HINT}"
        )),
        "{message}"
    );
    assert!(!error.is_transient(), "{message}");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_workspace_url_that_answers_with_a_web_page_says_so() {
    let page = "<!DOCTYPE html>\n<html><head><title>Taskade</title></head><body>app</body></html>";
    // A website answers every path with its app (200), or with its 404 page.
    for status in [200, 404] {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(
                ResponseTemplate::new(status).set_body_raw(page, "text/html; charset=utf-8"),
            )
            .mount(&server)
            .await;
        let error = plan_error(&server.uri()).await;
        let message = error.to_string();
        // Users and Groups are read at once: whichever answer is read first fails
        // the run (Groups, on a loaded machine).
        let asked = |what: &str| {
            ["Users", "Groups"].iter().any(|endpoint| {
                message.contains(&format!(
                    "{what}; asked {}/{endpoint}: {HINT}",
                    server.uri()
                ))
            })
        };
        // A 404 page is named by its title, not quoted.
        assert!(
            asked(
                "an HTML page (\"Taskade\"), not SCIM JSON: a web server, proxy, firewall or \
                 gateway answered instead of the SCIM service"
            ) || status == 200,
            "{status}: {message}"
        );
        assert!(
            asked("an HTML page, not SCIM JSON") || status == 404,
            "{status}: {message}"
        );
        // A 404 page's markup says nothing; a page answered with 200 may be a
        // proxy's or a login page, which its start names.
        assert_eq!(
            message.contains("the page begins: <!DOCTYPE html> <html><head><title>Taskade"),
            status == 200,
            "{status}: {message}"
        );
        assert!(!error.is_transient(), "{status}: {message}");
    }
}

/// The error of a `plan` whose directory is the SCIM provider at `directory_url`
/// (bearer `idp-t0ken`) and whose workspace is `workspace` (bearer `t0ken`).
async fn plan_error_reading_scim_directory(
    directory_url: &str,
    workspace: &seatwarden::sandbox::Sandbox,
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seatwarden.toml");
    std::fs::write(
        &path,
        format!(
            "[directory]\nkind = \"scim\"\nurl = \"{directory_url}\"\ntoken = \"idp-t0ken\"\n\n\
             [workspace]\nurl = \"{}\"\ntoken = \"t0ken\"\n",
            workspace.base_url()
        ),
    )
    .unwrap();
    let config = Config::load_with_env(&path, Some(Default::default())).unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    run::execute(&config, store, Mode::Plan)
        .await
        .unwrap_err()
        .to_string()
}

#[tokio::test]
async fn a_scim_directory_url_without_the_scim_path_names_directory_url() {
    let provider = demo_sandbox("idp-t0ken", Faults::default()).await;
    let workspace = demo_sandbox("t0ken", Faults::default()).await;
    let provider_root = provider
        .base_url()
        .as_str()
        .trim_end_matches('/')
        .trim_end_matches("/scim/v2")
        .to_owned();
    let message = plan_error_reading_scim_directory(&provider_root, &workspace).await;
    assert!(
        message.contains(&format!(
            "asked {provider_root}/Users: `directory.url` must be the SCIM base URL"
        )) && !message.contains("workspace.url"),
        "{message}"
    );
    provider.shutdown().await;
    workspace.shutdown().await;
}

/// A provider that redirects (to a sign-in page, most often) is pointed at by
/// the key of the side that asked it: here `directory.url`, not the workspace's.
#[tokio::test]
async fn a_redirect_from_a_scim_directory_names_directory_url() {
    let provider = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(302).insert_header("location", "https://idp.example.com/login"),
        )
        .mount(&provider)
        .await;
    let workspace = demo_sandbox("t0ken", Faults::default()).await;
    let directory_url = format!("{}/scim/v2", provider.uri());
    let message = plan_error_reading_scim_directory(&directory_url, &workspace).await;
    assert!(
        message.contains("redirected to https://idp.example.com/login")
            && message.ends_with("(directory.url)"),
        "{message}"
    );
    workspace.shutdown().await;
}

#[tokio::test]
async fn a_second_demo_in_the_same_directory_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let first = seatwarden::demo::lock(&demo_dir).unwrap();
    let error = seatwarden::demo::run(&demo_dir, false).await.unwrap_err();
    assert!(
        matches!(error, seatwarden::demo::DemoError::Busy { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&format!(
            "another `seatwarden demo` (process {}) is using {}",
            std::process::id(),
            demo_dir.display()
        )) && message.contains("another directory with --dir"),
        "{message}"
    );
    // Refused before it touched the first one's files.
    assert!(!demo_dir.join("seatwarden.db").exists());
    assert!(!demo_dir.join("seatwarden.toml").exists());
    drop(first);
    let outcome = seatwarden::demo::run(&demo_dir, false).await.unwrap();
    assert!(outcome.converged());
}

/// The port of the `workspace.url` in the demo's configuration.
fn configured_port(dir: &std::path::Path) -> u16 {
    let config =
        Config::load_with_env(&dir.join("seatwarden.toml"), Some(Default::default())).unwrap();
    url::Url::parse(&config.workspace.url)
        .unwrap()
        .port()
        .unwrap()
}

/// What a plan against `seed` served where the demo's configuration points plans.
pub(crate) async fn plan_against(dir: &std::path::Path, seed: &str) -> usize {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", configured_port(dir)))
        .await
        .unwrap();
    let sandbox = seatwarden::sandbox::Sandbox::start(
        listener,
        seatwarden::sandbox::SandboxOptions {
            token: "demo-token".to_owned(),
            ..Default::default()
        },
        seatwarden::sandbox::load_seed(&dir.join(seed)).unwrap(),
    )
    .await
    .unwrap();
    let config =
        Config::load_with_env(&dir.join("seatwarden.toml"), Some(Default::default())).unwrap();
    let store = Store::open(&config.state.path).unwrap();
    let outcome = run::execute(&config, store, Mode::Plan).await.unwrap();
    sandbox.shutdown().await;
    outcome.report.summary.actions_planned
}

#[tokio::test]
async fn after_the_demo_its_workspace_file_is_the_converged_workspace_and_the_text_says_how_to_serve_it()
 {
    let dir = tempfile::tempdir().unwrap();
    let outcome = seatwarden::demo::run(dir.path(), false).await.unwrap();
    assert!(outcome.converged());
    assert_eq!(outcome.port, configured_port(dir.path()));

    // Served again where the configuration points, the demo's workspace plans
    // nothing; the drift it started from is there to start over with.
    assert_eq!(plan_against(dir.path(), "workspace.json").await, 0);
    assert!(plan_against(dir.path(), "workspace-drifted.json").await > 0);

    let text = seatwarden::demo::closing_text(&outcome);
    let config = dir.path().join("seatwarden.toml");
    for expected in [
        format!(
            "seatwarden sandbox --seed {} --port {} --token demo-token\n",
            dir.path().join("workspace.json").display(),
            outcome.port
        ),
        format!("seatwarden --config {} plan\n", config.display()),
        format!("seatwarden --config {} report\n", config.display()),
        "workspace.json           the workspace as the demo left it\n".to_owned(),
        "workspace-drifted.json   the workspace it started from\n".to_owned(),
    ] {
        assert!(text.contains(&expected), "{expected}\n---\n{text}");
    }
}
