//! `check-config --connect`: each configured connection tested with the requests
//! a run (or a delivery) makes first, read-only, against real servers: the
//! sandbox workspace (good and refused token), wiremock Okta and Entra shaped as
//! in `okta.rs` / `entra.rs` (good, and a 403 that names the permission), and a
//! loopback SMTP relay (login accepted, login refused). Every side is tried
//! whatever another's outcome; nothing is written: the sandbox sees only GETs,
//! the relay no MAIL, and no state database is made.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use seatwarden::directory::{Directory, EntraSource, OktaSource};
use seatwarden::sandbox::Faults;
use wiremock::MockServer;

const TOKEN: &str = "connect-test-token";
const SMTP_USER: &str = "seatwarden";
const SMTP_PASSWORD: &str = "relay-secret-1";

/// A loopback SMTP relay offering AUTH PLAIN and LOGIN that accepts only
/// `SMTP_USER` / `SMTP_PASSWORD` (535 otherwise, as Postfix answers a wrong
/// password): its port, and every command verb it was sent, in order.
fn relay() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let verbs = Arc::new(Mutex::new(Vec::new()));
    let seen = verbs.clone();
    let good =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{SMTP_USER}\0{SMTP_PASSWORD}"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let _ = stream.write_all(b"220 relay.example.com ESMTP\r\n");
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                let mut words = line.split_whitespace();
                let verb = words.next().unwrap_or("").to_ascii_uppercase();
                seen.lock().unwrap().push(verb.clone());
                let reply: &[u8] = match verb.as_str() {
                    "EHLO" => b"250-relay.example.com\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n",
                    "AUTH" if words.nth(1) == Some(good.as_str()) => {
                        b"235 2.7.0 Authentication successful\r\n"
                    }
                    "AUTH" => b"535 5.7.8 Error: authentication failed\r\n",
                    "QUIT" => b"221 2.0.0 Bye\r\n",
                    _ => b"250 2.0.0 Ok\r\n",
                };
                if stream.write_all(reply).is_err() || verb == "QUIT" {
                    break;
                }
                line.clear();
            }
        }
    });
    (port, verbs)
}

/// The demo's configuration and directory in `dir` for the sandbox at `url`
/// with `token`, the state database `state.db` beside them, and with `relay`
/// (port, password) a `[report.email]` logging in to it.
fn configure(dir: &Path, url: &str, token: &str, relay: Option<(u16, &str)>) {
    crate::fixtures::copy_demo_files(dir);
    let toml = dir.join("seatwarden.toml");
    let text = std::fs::read_to_string(&toml)
        .unwrap()
        .replace(
            "url = \"http://127.0.0.1:0/scim/v2\"",
            &format!("url = \"{url}\""),
        )
        .replace("token = \"demo-token\"", &format!("token = \"{token}\""));
    let mut text = text.replace("path = \"seatwarden.db\"", "path = \"state.db\"");
    assert!(
        text.contains(url) && text.contains("state.db"),
        "the demo's configuration moved"
    );
    if let Some((port, password)) = relay {
        text.push_str(&format!(
            "\n[report.email]\nsmtp_url = \"smtp://127.0.0.1:{port}\"\n\
             username = \"{SMTP_USER}\"\npassword = \"{password}\"\n\
             from = \"seatwarden@example.com\"\nto = [\"it-security@example.com\"]\n\
             timeout = \"5s\"\n"
        ));
    }
    std::fs::write(&toml, text).unwrap();
}

fn load(dir: &Path) -> seatwarden::config::Config {
    seatwarden::config::Config::load_with_env(
        &dir.join("seatwarden.toml"),
        Some(Default::default()),
    )
    .unwrap()
}

async fn check_config_connect(dir: &Path) -> (Option<i32>, String) {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        crate::fixtures::seatwarden_in(&dir, &[], &["check-config", "--connect"])
    })
    .await
    .unwrap()
}

fn line<'a>(stderr: &'a str, side: &str) -> &'a str {
    stderr
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(&format!("{side} ")))
        .unwrap_or_else(|| panic!("no {side} line: {stderr}"))
}

/// The binary: a good token passes (exit 0) with what discovery learnt and one
/// page of Users and of Groups read; a refused one fails (exit 1), named as a
/// 401 with what to check, while the directory side still passes. The sandbox
/// saw only GETs, and no state database was made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workspace_is_read_with_the_token_and_a_refused_one_fails_the_check() {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Faults::default()).await;
    sandbox.record_requests();
    let dir = tempfile::tempdir().unwrap();
    configure(dir.path(), sandbox.base_url().as_str(), TOKEN, None);

    let (code, stderr) = check_config_connect(dir.path()).await;
    assert_eq!(code, Some(0), "{stderr}");
    let workspace = line(&stderr, "workspace");
    assert!(
        workspace.contains(" ok ")
            && workspace.contains("ServiceProviderConfig: PATCH yes")
            && workspace.contains("GET /Users (")
            && workspace.contains("GET /Groups ("),
        "{workspace}"
    );
    assert!(line(&stderr, "directory").contains(" ok "), "{stderr}");
    assert!(stderr.contains("connections OK"), "{stderr}");

    sandbox.set_token("rotated-since");
    let (code, stderr) = check_config_connect(dir.path()).await;
    assert_eq!(code, Some(1), "{stderr}");
    let workspace = line(&stderr, "workspace");
    assert!(
        workspace.contains("FAILED")
            && workspace.contains("HTTP 401")
            && workspace.contains("check workspace.token"),
        "{workspace}"
    );
    assert!(!workspace.contains(TOKEN), "{workspace}");
    assert!(line(&stderr, "directory").contains(" ok "), "{stderr}");

    let seen = sandbox.requests_seen();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|r| r.method == "GET"), "{seen:?}");
    // One page of each, never a whole listing: the demo has more than one.
    assert!(
        seen.iter()
            .filter(|r| r.path == "/Users" || r.path == "/Groups")
            .count()
            <= 4,
        "{seen:?}"
    );
    assert!(!dir.path().join("state.db").exists());
    sandbox.shutdown().await;
}

/// The mail side logs in and quits, sending no message; a refused login fails
/// it (the relay's 535 quoted, the password not), and the other sides are
/// still tried and shown passing, so one run shows every problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_is_logged_in_to_and_quit_and_a_refused_login_fails_alone() {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Faults::default()).await;
    let (port, verbs) = relay();
    let dir = tempfile::tempdir().unwrap();
    configure(
        dir.path(),
        sandbox.base_url().as_str(),
        TOKEN,
        Some((port, SMTP_PASSWORD)),
    );

    let checks = seatwarden::connect::check(&load(dir.path())).await;
    let sides: Vec<_> = checks.iter().map(|c| (c.side, c.passed())).collect();
    assert_eq!(
        sides,
        [("directory", true), ("workspace", true), ("mail", true)],
        "{checks:?}"
    );
    assert!(
        checks[2].line().contains("AUTH accepted, QUIT"),
        "{checks:?}"
    );
    assert_eq!(*verbs.lock().unwrap(), ["EHLO", "AUTH", "QUIT"]);

    verbs.lock().unwrap().clear();
    configure(
        dir.path(),
        sandbox.base_url().as_str(),
        TOKEN,
        Some((port, "wrong-password")),
    );
    let (code, stderr) = check_config_connect(dir.path()).await;
    assert_eq!(code, Some(1), "{stderr}");
    let mail = line(&stderr, "mail");
    assert!(mail.contains("FAILED") && mail.contains("535"), "{mail}");
    assert!(!stderr.contains("wrong-password"), "{stderr}");
    assert!(line(&stderr, "workspace").contains(" ok "), "{stderr}");
    assert!(line(&stderr, "directory").contains(" ok "), "{stderr}");
    let verbs = verbs.lock().unwrap().clone();
    assert!(
        !verbs
            .iter()
            .any(|v| v == "MAIL" || v == "RCPT" || v == "DATA"),
        "{verbs:?}"
    );
    assert!(!dir.path().join("state.db").exists());
    sandbox.shutdown().await;
}

/// Okta: the API token and one small page of users and of groups (and of the
/// app's assignments with `app_id`), never a member listing; a 403 names the
/// permission the refused read needs and Okta's errorId.
#[tokio::test]
async fn okta_is_probed_with_one_small_page_each_and_a_403_names_the_permission() {
    use crate::okta::{LinkStyle, settings, small_org, ssws};
    use wiremock::Mock;
    use wiremock::matchers::{method, path};
    let server = MockServer::start().await;
    small_org(LinkStyle::SeparateLines).mount(&server).await;
    let mut s = settings(&server, ssws());
    s.app_id = Some("0oa1app".into());
    let proven = Directory::Okta(OktaSource::new(s))
        .probe(&|_| {})
        .await
        .unwrap();
    assert_eq!(
        proven,
        [
            "API token accepted",
            "GET /api/v1/users?limit=1",
            "GET /api/v1/users?limit=1&search=status%20eq%20%22DEPROVISIONED%22",
            "GET /api/v1/groups?limit=1",
            "GET /api/v1/apps/0oa1app/users?limit=1",
            "GET /api/v1/apps/0oa1app/groups?limit=1",
        ]
    );
    let asked = server.received_requests().await.unwrap();
    assert_eq!(asked.len(), 5, "one request a listing, no page followed");

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/groups"))
        .respond_with(okta_error(
            403,
            "E0000006",
            "You do not have permission to perform the requested action",
            "oae-connect-check",
        ))
        .with_priority(1)
        .mount(&server)
        .await;
    small_org(LinkStyle::SeparateLines).mount(&server).await;
    let text = Directory::Okta(OktaSource::new(settings(&server, ssws())))
        .probe(&|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("GET /api/v1/groups")
            && text.contains("HTTP 403 (E0000006)")
            && text.contains("API token")
            && text.contains("oae-connect-check"),
        "{text}"
    );
}

/// An Okta error answer, shaped as Okta sends them.
fn okta_error(
    status: u16,
    code: &str,
    summary: &str,
    error_id: &str,
) -> wiremock::ResponseTemplate {
    wiremock::ResponseTemplate::new(status).set_body_json(serde_json::json!({
        "errorCode": code,
        "errorSummary": summary,
        "errorLink": code,
        "errorId": error_id,
        "errorCauses": []
    }))
}

/// Okta: a refused DEPROVISIONED search (here Okta's 400 for a search it will
/// not run; a proxy dropping the parameter answers alike) fails the probe as it
/// fails every run, naming the search: the plain user listing alone passed it.
#[tokio::test]
async fn okta_probe_fails_when_the_deprovisioned_users_search_is_refused() {
    use crate::okta::{LinkStyle, settings, small_org, ssws};
    use wiremock::Mock;
    use wiremock::matchers::{method, path, query_param_contains};
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/users"))
        .and(query_param_contains("search", "DEPROVISIONED"))
        .respond_with(okta_error(
            400,
            "E0000031",
            "Invalid search criteria.",
            "oae-search-refused",
        ))
        .with_priority(1)
        .mount(&server)
        .await;
    small_org(LinkStyle::SeparateLines).mount(&server).await;
    let text = Directory::Okta(OktaSource::new(settings(&server, ssws())))
        .probe(&|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("GET /api/v1/users?limit=1&search=status%20eq%20%22DEPROVISIONED%22")
            && text.contains("HTTP 400 (E0000031): Invalid search criteria.")
            && text.contains("oae-search-refused"),
        "{text}"
    );
}

/// A Graph tenant answering only what a probe asks, shaped as `entra.rs`'s
/// fake: the token endpoint, and one page of `$top=1` users and groups (with
/// a next link, never to be followed).
async fn small_graph(server: &MockServer) {
    use crate::entra::{graph_group, graph_user};
    use wiremock::matchers::{method, path, path_regex, query_param};
    use wiremock::{Mock, ResponseTemplate};
    Mock::given(method("POST"))
        .and(path_regex(r"^/[^/]+/oauth2/v2\.0/token$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
            "access_token": "graph-token-1"
        })))
        .mount(server)
        .await;
    let next = format!("{}/v1.0/next-page-never-read", server.uri());
    for (collection, item) in [
        ("users", graph_user("a1", "ada@contoso.com", true)),
        ("groups", graph_group("g1", "Taskade Users")),
    ] {
        Mock::given(method("GET"))
            .and(path(format!("/v1.0/{collection}")))
            .and(query_param("$top", "1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#{collection}"),
                "@odata.nextLink": next,
                "value": [item]
            })))
            .mount(server)
            .await;
    }
}

/// Entra: a token from the tenant and one small page of users and of groups,
/// no page followed; a 403 names the Graph permission and the request-id.
#[tokio::test]
async fn entra_is_probed_with_one_small_page_each_and_a_403_names_the_permission() {
    use crate::entra::{secret, settings};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, ResponseTemplate};
    let server = MockServer::start().await;
    small_graph(&server).await;
    let proven = Directory::Entra(EntraSource::new(settings(&server, secret())))
        .probe(&|_| {})
        .await
        .unwrap();
    assert_eq!(proven.len(), 3, "{proven:?}");
    assert_eq!(proven[0], "access token issued");
    assert!(proven[1].starts_with("GET /v1.0/users?") && proven[1].ends_with("$top=1"));
    assert!(proven[2].starts_with("GET /v1.0/groups?") && proven[2].ends_with("$top=1"));
    let asked = server.received_requests().await.unwrap();
    assert_eq!(asked.len(), 3, "a token and one page each");

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1.0/groups"))
        .respond_with(
            ResponseTemplate::new(403).set_body_json(serde_json::json!({"error": {
                "code": "Authorization_RequestDenied",
                "message": "Insufficient privileges to complete the operation.",
                "innerError": {
                    "date": "2026-12-05T05:00:00",
                    "request-id": "5b3a1c2e-0000-4000-8000-00000000c0de"
                }
            }})),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    small_graph(&server).await;
    let text = Directory::Entra(EntraSource::new(settings(&server, secret())))
        .probe(&|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("GET /v1.0/groups")
            && text.contains("HTTP 403")
            && text.contains("GroupMember.Read.All")
            && text.contains("5b3a1c2e-0000-4000-8000-00000000c0de"),
        "{text}"
    );
}

/// LDAP against the interop suite's slapd (`#[ignore]`d like `ldap.rs`: run by
/// `scripts/interop.sh`, which passes `SEATWARDEN_LDAP_URL`): a bind and one
/// search of one user and one group; a wrong password fails the bind, named
/// (invalidCredentials); a user filter that matches nobody fails, as a run
/// reading it would be refused as a source fault.
#[tokio::test]
#[ignore]
async fn interop_ldap_is_probed_with_a_bind_and_two_one_entry_searches() {
    let url = std::env::var("SEATWARDEN_LDAP_URL")
        .expect("SEATWARDEN_LDAP_URL: run through scripts/interop.sh");
    let probe = |password: &'static str, extra: &'static str| {
        let url = url.clone();
        async move {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("bind-password"), format!("{password}\n")).unwrap();
            std::fs::write(
                dir.path().join("seatwarden.toml"),
                format!(
                    "[directory]\nkind = \"ldap\"\nflavor = \"openldap\"\nurl = \"{url}\"\n\
                     bind_dn = \"cn=seatwarden,ou=services,dc=example,dc=com\"\n\
                     bind_password_file = \"bind-password\"\n\
                     base_dn = \"ou=people,dc=example,dc=com\"\n\
                     group_base_dn = \"ou=groups,dc=example,dc=com\"\n\
                     page_size = 2\ntimeout = \"10s\"\n{extra}\n\
                     [workspace]\nurl = \"http://127.0.0.1:9/scim/v2\"\ntoken = \"t\"\n"
                ),
            )
            .unwrap();
            load(dir.path()).directory().probe(&|_| {}).await
        }
    };
    let proven = probe("interop-bind-secret", "").await.unwrap();
    assert_eq!(proven.len(), 3, "{proven:?}");
    assert!(proven[0].starts_with("bind as"), "{proven:?}");
    assert!(
        proven[1].starts_with("search users under \"ou=people"),
        "{proven:?}"
    );
    assert!(
        proven[2].starts_with("search groups under \"ou=groups"),
        "{proven:?}"
    );
    assert!(
        !proven.iter().any(|p| p.contains("none found")),
        "{proven:?}"
    );

    let text = probe("not-the-password", "").await.unwrap_err().to_string();
    assert!(
        text.contains("bind as") && text.contains("invalidCredentials"),
        "{text}"
    );

    let text = probe(
        "interop-bind-secret",
        "user_filter = \"(&(objectClass=inetOrgPerson)(uid=nobody-at-all))\"\n",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(text.contains("found no one"), "{text}");
}

/// A SCIM directory (here the sandbox serving the people): discovery, one
/// page of Users and of Groups with its token, then every User for `active`,
/// GETs only; a refused token is named as a 401.
#[tokio::test]
async fn a_scim_directory_is_probed_with_one_page_each() {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Faults::default()).await;
    sandbox.record_requests();
    let probe = |token: &'static str| {
        let url = sandbox.base_url().to_string();
        async move {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(
                dir.path().join("seatwarden.toml"),
                format!(
                    "[directory]\nkind = \"scim\"\nurl = \"{url}\"\ntoken = \"{token}\"\n\n\
                     [workspace]\nurl = \"http://127.0.0.1:9/scim/v2\"\ntoken = \"t\"\n"
                ),
            )
            .unwrap();
            load(dir.path()).directory().probe(&|_| {}).await
        }
    };
    let proven = probe(TOKEN).await.unwrap();
    assert_eq!(proven.len(), 4, "{proven:?}");
    assert!(
        proven[0].starts_with("ServiceProviderConfig: "),
        "{proven:?}"
    );
    assert!(proven[1].starts_with("GET /Users ("), "{proven:?}");
    assert!(proven[2].starts_with("GET /Groups ("), "{proven:?}");
    // Every User for `active` (session 62): a mix a first run would refuse.
    assert!(
        proven[3].starts_with("GET /Users, all pages ("),
        "{proven:?}"
    );
    let text = probe("wrong").await.unwrap_err().to_string();
    assert!(text.contains("HTTP 401"), "{text}");
    let seen = sandbox.requests_seen();
    assert!(seen.iter().all(|r| r.method == "GET"), "{seen:?}");
    sandbox.shutdown().await;
}
