//! Review (s41) of how seatwarden behaves when providers push back: `Retry-After`
//! (seconds or an HTTP-date), rate limits, retries and what is reported of them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use seatwarden::directory::{Directory, OktaAuth, OktaSource, Secret};
use seatwarden::retry::RetryPolicy;
use seatwarden::run::{self, Mode};
use seatwarden::sandbox::{Sandbox, SandboxOptions};
use seatwarden::store::Store;
use seatwarden::synth::{self, SynthSpec};
use seatwarden::workspace::{RoleAttribute, ScimClient, ScimSettings};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client_with(server: &MockServer, retry: RetryPolicy) -> ScimClient {
    ScimClient::new(ScimSettings {
        base_url: format!("{}/scim/v2", server.uri()).parse().unwrap(),
        token: "t0ken".to_owned().into(),
        role_attribute: RoleAttribute::Roles,
        page_size: 100,
        pagination: seatwarden::workspace::Pagination::Auto,
        max_concurrency: 2,
        requests_per_second: 0,
        timeout: Duration::from_secs(10),
        retry,
        managed_groups: Vec::new(),
        group_members: seatwarden::workspace::GroupMembers::Listed,
        ca_pem: None,
    })
    .unwrap()
}

fn scim_error(status: u16, detail: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("content-type", "application/scim+json")
        .set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": status.to_string(),
            "detail": detail,
        }))
}

/// A 503 whose `Retry-After` is an HTTP-date two seconds after its own `Date`,
/// from a server whose clock is an hour behind this host's (or this host's an
/// hour ahead). Measured against this host's clock the date was long past, and
/// the retry went out at once, into the maintenance window; measured against
/// the answer's `Date` it waits the two seconds asked.
#[tokio::test]
async fn a_retry_after_date_counts_from_the_servers_clock_not_ours() {
    let server = MockServer::start().await;
    let server_now = SystemTime::now() - Duration::from_secs(3600);
    Mock::given(method("PATCH"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(
            scim_error(503, "maintenance")
                .insert_header("date", httpdate::fmt_http_date(server_now).as_str())
                .insert_header(
                    "retry-after",
                    httpdate::fmt_http_date(server_now + Duration::from_secs(2)).as_str(),
                ),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let client = client_with(
        &server,
        RetryPolicy {
            max_retry_after: Duration::from_secs(10),
            ..RetryPolicy::immediate(3)
        },
    );
    let started = std::time::Instant::now();
    client.set_active("u1", false).await.unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    assert_eq!(client.stats().retries, 1);
}

/// Okta's documented 429 (`E0000047`), its window reset a second ago so that the
/// retry need not wait.
fn okta_rate_limited() -> ResponseTemplate {
    let reset = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    ResponseTemplate::new(429)
        .insert_header("x-rate-limit-limit", "600")
        .insert_header("x-rate-limit-remaining", "0")
        .insert_header("x-rate-limit-reset", reset.to_string().as_str())
        .set_body_json(json!({
            "errorCode": "E0000047",
            "errorSummary": "API call exceeded rate limit due to too many requests.",
            "errorLink": "E0000047",
            "errorId": "oae-s41",
            "errorCauses": []
        }))
}

/// A run whose Okta read was throttled twice reports those two retries: the
/// report's `retries` counted the workspace client's alone, and said 0 of a run
/// that spent its time waiting on the directory.
#[tokio::test]
async fn the_report_counts_the_directorys_retries() {
    let data = synth::generate(&SynthSpec {
        people: 30,
        groups: 2,
        drift_percent: 10.0,
        seed: 41,
    });
    let okta = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/groups"))
        .respond_with(okta_rate_limited())
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&okta)
        .await;
    crate::connectors::okta_org(&data, 25).mount(&okta).await;
    let mut settings = crate::okta::settings(
        &okta,
        OktaAuth::Ssws(Secret::Inline("s41-okta-token".to_owned().into())),
    );
    settings.other_groups = data.group_names.clone();
    let directory = Directory::Okta(OktaSource::new(settings));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(
        listener,
        SandboxOptions {
            token: "s41-scim-token".to_owned(),
            ..SandboxOptions::default()
        },
        data.workspace.clone(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = crate::fixtures::synth_config(
        dir.path(),
        &data,
        sandbox.base_url().as_ref(),
        "s41-scim-token",
        4,
    );
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let outcome = run::execute_with(
        &config,
        &directory,
        &client,
        Store::open(&config.state.path).unwrap(),
        Mode::Plan,
    )
    .await
    .unwrap();
    assert_eq!(client.stats().retries, 0);
    assert_eq!(outcome.report.summary.retries, 2);
    sandbox.shutdown().await;
}

/// A SCIM directory read through a `/Groups` answered 503 once counts the retry
/// it made: its client is the read's own, dropped with its counts.
#[tokio::test]
async fn a_scim_directory_counts_the_retries_of_its_reads() {
    let idp = MockServer::start().await;
    let list = |resources: serde_json::Value| {
        let n = resources.as_array().map_or(0, Vec::len);
        ResponseTemplate::new(200).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": n, "startIndex": 1, "itemsPerPage": n, "Resources": resources,
        }))
    };
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(list(json!([{"id": "p1", "userName": "ada@example.com"}])))
        .mount(&idp)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(scim_error(503, "busy"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&idp)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(list(json!([
            {"id": "g1", "displayName": "Taskade Users", "members": [{"value": "p1"}]}
        ])))
        .mount(&idp)
        .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"scim\"\nurl = \"{}/scim/v2\"\ntoken = \"idp-token\"\n\
             requests_per_second = 0\n\n\
             [workspace]\nurl = \"http://127.0.0.1:9/scim/v2\"\ntoken = \"t0ken\"\n\n\
             [policy]\nscope_groups = [\"Taskade Users\"]\n",
            idp.uri()
        ),
    )
    .unwrap();
    let config = seatwarden::config::Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(Default::default()),
    )
    .unwrap();
    let directory = config.directory();
    assert_eq!(directory.retries(), 0);
    let snapshot = directory.snapshot().await.unwrap();
    assert_eq!(snapshot.identities.len(), 1);
    assert_eq!(directory.retries(), 1);
}

/// An LDAP server that refuses the connection is retried, and the retries are
/// counted like an HTTP connector's.
#[tokio::test]
async fn an_ldap_directory_counts_its_retries() {
    // A port nothing listens on any more.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"ldap\"\nurl = \"ldap://127.0.0.1:{port}\"\n\
             bind_dn = \"cn=seatwarden,dc=example,dc=com\"\nbind_password = \"pw\"\n\
             base_dn = \"dc=example,dc=com\"\n\n\
             [workspace]\nurl = \"http://127.0.0.1:9/scim/v2\"\ntoken = \"t0ken\"\n"
        ),
    )
    .unwrap();
    let config = seatwarden::config::Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(Default::default()),
    )
    .unwrap();
    let Directory::Ldap(source) = config.directory() else {
        panic!("not LDAP");
    };
    let directory = Directory::Ldap(seatwarden::directory::LdapSource::new(
        seatwarden::directory::LdapSettings {
            retry: RetryPolicy::immediate(2),
            ..source.settings().clone()
        },
    ));
    let refused = directory.snapshot().await.unwrap_err();
    assert!(refused.is_transient(), "{refused}");
    assert_eq!(directory.retries(), 2);
}

/// A server that sends its headers at once and then its body a byte at a time,
/// never finishing: the per-request timeout covers the body too, so a read gives
/// up after `timeout` per attempt instead of hanging the run.
#[tokio::test]
async fn a_body_that_never_ends_times_out_like_no_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/scim+json\r\n\
                            content-length: 100000\r\n\r\n{";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if socket.write_all(b" ").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let client = ScimClient::new(ScimSettings {
        base_url: format!("http://{address}/scim/v2").parse().unwrap(),
        token: "t0ken".to_owned().into(),
        role_attribute: RoleAttribute::Roles,
        page_size: 100,
        pagination: seatwarden::workspace::Pagination::Auto,
        max_concurrency: 2,
        requests_per_second: 0,
        timeout: Duration::from_millis(700),
        retry: RetryPolicy::immediate(1),
        managed_groups: Vec::new(),
        group_members: seatwarden::workspace::GroupMembers::Listed,
        ca_pem: None,
    })
    .unwrap();
    let started = std::time::Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(20), client.get_account("u1"))
        .await
        .expect("a dripping body hung the read")
        .unwrap_err();
    let took = started.elapsed();
    assert!(error.to_string().contains("timed out"), "{error}");
    // Far below the 20 s a dripping body would hold the read, with room for a
    // loaded machine (5 s left little for two 0.7 s timeouts).
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(client.stats().retries, 1);
    accepting.abort();
}

/// Graph throttling with `Retry-After` as an HTTP-date from a server whose clock
/// is an hour behind this host's: the directory connectors count the date from
/// the answer's `Date` too, and wait the two seconds asked.
#[tokio::test]
async fn a_graph_retry_after_date_counts_from_the_servers_clock() {
    let server = MockServer::start().await;
    let server_now = SystemTime::now() - Duration::from_secs(3600);
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("date", httpdate::fmt_http_date(server_now).as_str())
                .insert_header(
                    "retry-after",
                    httpdate::fmt_http_date(server_now + Duration::from_secs(2)).as_str(),
                )
                .set_body_json(json!({"error": {
                    "code": "TooManyRequests", "message": "Too many requests."
                }})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    crate::entra::small_tenant().mount(&server).await;
    let mut settings = crate::entra::settings(&server, crate::entra::secret());
    settings.retry = RetryPolicy {
        max_retry_after: Duration::from_secs(10),
        ..RetryPolicy::immediate(3)
    };
    let source = seatwarden::directory::EntraSource::new(settings);
    let started = std::time::Instant::now();
    source.snapshot().await.unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    assert_eq!(source.stats().retries, 1);
}

/// A `/ServiceProviderConfig` answered 429 (or 408) past the retries is the
/// provider pacing us, not a provider without the endpoint: the discovery fails,
/// as for a 503. Taken as "no ServiceProviderConfig", the run went on with
/// defaults (its PUTs without `If-Match` on a provider with ETags) to spend the
/// retries again on `/Users`. A 500 stays tolerated (a path some providers do
/// not serve).
#[tokio::test]
async fn discovery_fails_on_a_throttle_that_outlasts_the_retries() {
    for (status, fails) in [(429, true), (408, true), (500, false)] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/scim/v2/ServiceProviderConfig"))
            .respond_with(scim_error(status, "slow down").insert_header("retry-after", "0"))
            .mount(&server)
            .await;
        let client = client_with(&server, RetryPolicy::immediate(2));
        let discovered = client.discover().await;
        assert_eq!(discovered.is_err(), fails, "{status}: {discovered:?}");
        if let Err(e) = discovered {
            assert_eq!(e.status(), Some(status), "{e}");
        }
        assert_eq!(client.stats().retries, 2, "{status}");
    }
}

/// The value of `name` (a whole series name) in Prometheus text.
fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `GET /metrics` from a daemon on `port`; empty while it does not listen.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// A daemon whose SCIM directory answers 503 to everything: its first reconcile
/// and its first sweep each fail after the directory read's six retries, and
/// `seatwarden_retries_total` counts all twelve. It counted a reconcile's retries
/// only from the report of one that succeeded, and a sweep's only when the pass
/// did (and then the workspace's alone): 0 for a directory down or throttled
/// until the jobs gave up, which is when the counter matters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_metric_counts_the_retries_of_jobs_that_failed() {
    let idp = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(scim_error(503, "down for maintenance"))
        .mount(&idp)
        .await;
    let workspace = crate::fixtures::sandbox(
        "s41-daemon-token",
        seatwarden::model::WorkspaceSnapshot::default(),
    )
    .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seatwarden.toml");
    std::fs::write(
        &config,
        format!(
            "[directory]\nkind = \"scim\"\nurl = \"{}/scim/v2\"\ntoken = \"idp-token\"\n\
             requests_per_second = 0\n\n\
             [workspace]\nurl = \"{}\"\ntoken = \"s41-daemon-token\"\n\n\
             [policy]\nscope_groups = [\"Taskade Users\"]\n\n\
             [state]\npath = \"state.db\"\n\n\
             [schedule]\nreconcile = \"0 0 1 1 *\"\nsweep = \"0 0 1 1 *\"\n\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n",
            idp.uri(),
            workspace.base_url()
        ),
    )
    .unwrap();
    let mut daemon = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["--config", config.to_str().unwrap(), "daemon"])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let failed = |metrics: &str, job: &str| {
        metric(
            metrics,
            &format!("seatwarden_job_runs_total{{job_name=\"{job}\",status=\"failed\"}}"),
        )
        .unwrap_or(0.0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    let metrics = loop {
        let metrics = scrape(port);
        if failed(&metrics, "reconcile") >= 1.0 && failed(&metrics, "sweep") >= 1.0 {
            break metrics;
        }
        if std::time::Instant::now() > deadline {
            let _ = daemon.kill();
            panic!("the reconcile and the sweep did not both fail: {metrics}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = daemon.kill();
    let _ = daemon.wait();
    // Each job's directory read: one request and its six retries, then given up.
    let asked = idp.received_requests().await.unwrap().len();
    assert_eq!(asked, 14, "{metrics}");
    assert_eq!(
        metric(&metrics, "seatwarden_retries_total"),
        Some(12.0),
        "{metrics}"
    );
    workspace.shutdown().await;
}
