//! The shipped alerting rules (`prometheus/seatwarden.rules.yml`) against what a
//! running daemon exports: every selector in them matches a series the daemon
//! serves, and no series carries a label Prometheus attaches itself (`job`,
//! `instance`), which a scrape would rename to `exported_job` so that a rule's
//! `{job="sweep"}` matched nothing. The interop test runs Debian's Prometheus
//! against the daemon with the rules loaded (scripts/interop-prometheus.sh
//! installs it; scripts/interop.sh sets `SEATWARDEN_PROMETHEUS_BIN`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use seatwarden::sandbox::Faults;
use serde_json::Value;

use crate::daemon::{Daemon, daemon_env, demo_sandbox, start_daemon, wait_for};

fn rules_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus/seatwarden.rules.yml")
}

/// A series selector of a rule: the metric and its label matchers (all `=`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Selector {
    metric: String,
    labels: BTreeMap<String, String>,
}

impl Selector {
    fn promql(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        format!("{}{{{}}}", self.metric, labels.join(","))
    }
}

/// `name="value",…` up to the closing brace, from just after the opening one;
/// `None` for a matcher other than `=`.
fn label_matchers(text: &str) -> Option<(BTreeMap<String, String>, usize)> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    let mut used = 0;
    loop {
        let trimmed = rest.trim_start_matches([' ', ',']);
        used += rest.len() - trimmed.len();
        rest = trimmed;
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, used + rest.len() - after.len()));
        }
        let (name, after_name) = rest.split_once('=')?;
        let value_and_rest = after_name.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = value_and_rest.char_indices();
        let end = loop {
            let (at, c) = chars.next()?;
            match c {
                '\\' => value.push(chars.next()?.1),
                '"' => break at,
                c => value.push(c),
            }
        };
        labels.insert(name.trim().to_owned(), value);
        let consumed = name.len() + 2 + end + 1;
        used += consumed;
        rest = &rest[consumed..];
    }
}

/// Every series selector in the rules' expressions: `seatwarden_*` metrics and
/// `up`, with their `=` matchers. Comments and annotations are prose, not read.
fn rule_selectors(rules: &str) -> Vec<Selector> {
    let mut found = Vec::new();
    let mut in_expr = false;
    for line in rules.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            continue;
        }
        if let Some(key) = trimmed
            .trim_start_matches("- ")
            .split_once(':')
            .map(|(key, _)| key)
            .filter(|key| key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            in_expr = key == "expr";
        }
        if !in_expr {
            continue;
        }
        let bytes = trimmed.as_bytes();
        let mut at = 0;
        while at < trimmed.len() {
            let word_start =
                at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
            let rest = &trimmed[at..];
            if word_start && (rest.starts_with("seatwarden_") || rest.starts_with("up{")) {
                let name_len = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                let metric = rest[..name_len].to_owned();
                let (labels, used) = match rest[name_len..].strip_prefix('{') {
                    Some(inner) => {
                        let (labels, used) = label_matchers(inner)
                            .unwrap_or_else(|| panic!("cannot read the matchers of {rest:?}"));
                        (labels, used + 1)
                    }
                    None => (BTreeMap::new(), 0),
                };
                found.push(Selector { metric, labels });
                at += name_len + used;
            } else {
                at += rest.chars().next().map_or(1, char::len_utf8);
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// The series of a Prometheus text exposition: metric name and labels.
fn exposed_series(metrics: &str) -> Vec<Selector> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let name_len = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = match line[name_len..].strip_prefix('{') {
                Some(inner) => {
                    label_matchers(inner)
                        .unwrap_or_else(|| panic!("unreadable series {line:?}"))
                        .0
                }
                None => BTreeMap::new(),
            };
            Selector {
                metric: line[..name_len].to_owned(),
                labels,
            }
        })
        .collect()
}

fn matches(selector: &Selector, series: &Selector) -> bool {
    selector.metric == series.metric
        && selector
            .labels
            .iter()
            .all(|(k, v)| series.labels.get(k) == Some(v))
}

/// A daemon that has reconciled (at its start) and swept (every second) once,
/// so that the series that appear only then are there.
async fn swept_daemon(dir: &Path) -> (Daemon, seatwarden::sandbox::Sandbox) {
    let sandbox = demo_sandbox(Faults::default()).await;
    let mut env = daemon_env(dir, &sandbox, "* * * * * *");
    // A certificate file, for the certificate gauge (the sandbox is plain HTTP,
    // so it is read and never used).
    env.push((
        "SEATWARDEN__WORKSPACE__CA_FILE".to_owned(),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls/ca.pem")
            .display()
            .to_string(),
    ));
    let daemon = start_daemon(dir, env);
    wait_for(
        "a reconcile and a sweep to succeed",
        Duration::from_secs(90),
        // Whatever the label is called: the tests say what is wrong with it.
        || {
            let metrics = daemon.get("/metrics").1;
            ["reconcile", "sweep"].iter().all(|job| {
                let value = format!("=\"{job}\"}}");
                metrics.lines().any(|l| {
                    l.starts_with("seatwarden_last_success_timestamp_seconds{")
                        && l.contains(&value)
                })
            })
        },
    )
    .await;
    (daemon, sandbox)
}

#[test]
fn the_rules_file_is_read_into_the_selectors_its_expressions_use() {
    let selectors = rule_selectors(&std::fs::read_to_string(rules_file()).unwrap());
    let promql: Vec<String> = selectors.iter().map(Selector::promql).collect();
    for expected in [
        "seatwarden_deprovisions_overdue{}",
        "seatwarden_last_success_timestamp_seconds{job_name=\"sweep\"}",
        "seatwarden_safety_finding{finding=\"source_fault\"}",
        "seatwarden_job_runs_total{status=\"failed\"}",
        "up{job=\"seatwarden\"}",
    ] {
        assert!(
            promql.iter().any(|p| p == expected),
            "{expected} in {promql:#?}"
        );
    }
    // Prose is not read as a selector: the comments name metrics too.
    assert!(selectors.len() >= 16, "{promql:#?}");
    assert!(
        !promql
            .iter()
            .any(|p| p.starts_with("seatwarden_job_lock_wait_seconds")),
        "only named in a comment: {promql:#?}"
    );
}

/// Every selector of the shipped rules matches a series a running daemon
/// serves, and no series has a label a scrape would rename: a rule on a renamed
/// metric or label would never fire, silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_selector_matches_a_series_the_daemon_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, _sandbox) = swept_daemon(dir.path()).await;
    let series = exposed_series(&daemon.get("/metrics").1);
    assert!(series.len() > 50, "{series:#?}");

    let clashing: Vec<&Selector> = series
        .iter()
        .filter(|s| s.labels.contains_key("job") || s.labels.contains_key("instance"))
        .collect();
    assert!(
        clashing.is_empty(),
        "labels a scrape renames to exported_*: {clashing:#?}"
    );

    let selectors = rule_selectors(&std::fs::read_to_string(rules_file()).unwrap());
    let unmatched: Vec<String> = selectors
        .iter()
        // `up` is the scrape's own series, not the daemon's.
        .filter(|s| s.metric != "up")
        .filter(|s| !series.iter().any(|series| matches(s, series)))
        .map(Selector::promql)
        .collect();
    assert!(unmatched.is_empty(), "no series for {unmatched:?}");
}

/// Debian's Prometheus, started on a free loopback port with its data in `dir`.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(binary: &str, dir: &Path, target_port: u16) -> Prometheus {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: seatwarden\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{target_port}']\n",
                rules = rules_file().display()
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap();
        Prometheus { child, port }
    }

    async fn get(&self, client: &reqwest::Client, path: &str, query: &[(&str, &str)]) -> Value {
        let response = client
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "GET {path} {query:?}: {status} {body}");
        body
    }

    /// The series `promql` selects now.
    async fn query(&self, client: &reqwest::Client, promql: &str) -> Vec<Value> {
        let body = self
            .get(client, "/api/v1/query", &[("query", promql)])
            .await;
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// A real Prometheus scrapes a running daemon with the shipped rules loaded:
/// the daemon's series arrive without `exported_job`, every selector of the rules
/// selects something, every rule evaluates without error, a healthy daemon
/// trips none of them, and a failed reload shows as the reload alert pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Prometheus: run by scripts/interop.sh (SEATWARDEN_PROMETHEUS_BIN)"]
async fn interop_prometheus_scrapes_the_daemon_and_evaluates_the_rules() {
    let binary = std::env::var("SEATWARDEN_PROMETHEUS_BIN")
        .expect("SEATWARDEN_PROMETHEUS_BIN: the prometheus binary (scripts/interop-prometheus.sh)");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, _sandbox) = swept_daemon(dir.path()).await;
    let daemon_port = daemon.listening().await;
    let prometheus_dir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(&binary, prometheus_dir.path(), daemon_port);
    let log = || {
        std::fs::read_to_string(prometheus_dir.path().join("prometheus.log")).unwrap_or_default()
    };

    // Scraped: the reconcile's and the sweep's last successes are in.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ready = client
            .get(format!("http://127.0.0.1:{}/-/ready", prometheus.port))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready
            && prometheus
                .query(&client, "seatwarden_last_success_timestamp_seconds")
                .await
                .len()
                >= 2
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scrape in 60 s:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let all = prometheus
        .query(&client, "{__name__=~\"seatwarden_.+\"}")
        .await;
    assert!(all.len() > 50, "{all:#?}");
    for series in &all {
        let labels = &series["metric"];
        assert_eq!(labels["job"], "seatwarden", "{series}");
        assert!(
            labels.get("exported_job").is_none(),
            "renamed by the scrape: {series}"
        );
        assert!(
            labels.get("exported_instance").is_none(),
            "renamed by the scrape: {series}"
        );
    }
    // The exposition passes Prometheus's own lint (names, units, suffixes, HELP).
    let promtool = Path::new(&binary).with_file_name("promtool");
    let mut lint = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", promtool.display()));
    {
        use std::io::Write;
        let mut stdin = lint.stdin.take().unwrap();
        stdin
            .write_all(daemon.get("/metrics").1.as_bytes())
            .unwrap();
    }
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let selectors = rule_selectors(&std::fs::read_to_string(rules_file()).unwrap());
    for selector in &selectors {
        let promql = selector.promql();
        assert!(
            !prometheus.query(&client, &promql).await.is_empty(),
            "Prometheus has no series for {promql}"
        );
    }

    // Every rule evaluated (twice, so the first round's alerts are settled) and
    // healthy: a PromQL error (a many-to-many match, say) shows as `err`.
    let rules = |body: &Value| -> Vec<Value> {
        body["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let first_round = rules(&prometheus.get(&client, "/api/v1/rules", &[]).await)
        .iter()
        .map(|r| r["lastEvaluation"].as_str().unwrap_or_default().to_owned())
        .collect::<Vec<_>>();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let evaluated = loop {
        let now = rules(&prometheus.get(&client, "/api/v1/rules", &[]).await);
        let all_again = now.len() == first_round.len()
            && now
                .iter()
                .zip(&first_round)
                .all(|(r, before)| r["lastEvaluation"].as_str().unwrap_or_default() != before);
        if all_again {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rules not evaluated: {now:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Every rule of the file was loaded.
    let in_file = std::fs::read_to_string(rules_file())
        .unwrap()
        .matches("- alert: ")
        .count();
    assert!(in_file >= 20, "{in_file}");
    assert_eq!(evaluated.len(), in_file, "{evaluated:#?}");
    for rule in &evaluated {
        assert_eq!(rule["health"], "ok", "{rule:#}");
    }
    let alerts = prometheus.get(&client, "/api/v1/alerts", &[]).await;
    assert_eq!(
        alerts["data"]["alerts"],
        serde_json::json!([]),
        "a healthy daemon trips no rule"
    );

    // A broken configuration on SIGHUP: the reload alert pends (for 5 minutes).
    std::fs::write(daemon.config_path(), "[workspace\nurl = ").unwrap();
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -HUP {}", daemon.child.id())])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let alerts = prometheus.get(&client, "/api/v1/alerts", &[]).await;
        let pending: Vec<&Value> = alerts["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["labels"]["alertname"] == "SeatwardenConfigReloadFailed")
            .collect();
        if let Some(alert) = pending.first() {
            assert_eq!(alert["state"], "pending", "{alert:#}");
            assert_eq!(alert["labels"]["job"], "seatwarden", "{alert:#}");
            assert_eq!(alert["labels"]["severity"], "warning", "{alert:#}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reload alert: {alerts:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(daemon);
}

/// README's metrics table (type and labels of each metric) is what a running
/// daemon serves: `# TYPE` and the label names of its series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readmes_metrics_table_gives_each_metrics_type_and_labels() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let rows: Vec<Vec<String>> = readme
        .lines()
        .filter(|l| l.starts_with("| `seatwarden_"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect();
    assert!(rows.len() >= 20, "{rows:#?}");

    let dir = tempfile::tempdir().unwrap();
    let (daemon, _sandbox) = swept_daemon(dir.path()).await;
    let metrics = daemon.get("/metrics").1;
    let series = exposed_series(&metrics);
    let mut wrong = Vec::new();
    for row in &rows {
        let name = row[0].trim_matches('`');
        let kind = &row[1];
        let labels: std::collections::BTreeSet<&str> = row[2]
            .split(',')
            .map(|l| l.trim().trim_matches('`'))
            .filter(|l| !l.is_empty())
            .collect();
        let typed = format!("# TYPE {name} {kind}");
        if !metrics.lines().any(|l| l == typed) {
            wrong.push(format!("{name}: not a {kind}"));
        }
        let served: std::collections::BTreeSet<&str> = series
            .iter()
            .filter(|s| {
                s.metric == name
                    || (kind == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|suffix| s.metric == format!("{name}{suffix}")))
            })
            .flat_map(|s| s.labels.keys().map(String::as_str))
            .filter(|l| *l != "le")
            .collect();
        if served != labels {
            wrong.push(format!(
                "{name}: README labels {labels:?}, served {served:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");

    // "Verified within the SLA" is a bucket's share for the SLAs README names.
    for le in ["3600", "28800", "86400"] {
        let bucket = format!("seatwarden_deprovision_latency_seconds_bucket{{le=\"{le}\"}}");
        assert!(
            metrics.lines().any(|l| l.starts_with(&bucket)),
            "no {bucket} in:\n{metrics}"
        );
        assert!(
            readme.contains(&format!("le=\"{le}\"")),
            "README does not name {le}"
        );
    }
}

/// What `seatwarden_job_runs_total{status}` counts, as its `# HELP` and README
/// say it: a reconcile stopped at `schedule.reconcile_max_duration` is counted
/// `failed` (its job fails, so that SeatwardenJobFailing and the repeated-failure
/// mail see it), not `stopped`; `stopped` is SIGTERM while a job ran, whether it
/// was still reading or writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_runs_help_and_readme_count_an_over_time_reconcile_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, _sandbox) = swept_daemon(dir.path()).await;
    let metrics = daemon.get("/metrics").1;
    let help = metrics
        .lines()
        .find_map(|l| l.strip_prefix("# HELP seatwarden_job_runs_total "))
        .unwrap_or_else(|| panic!("no HELP of seatwarden_job_runs_total in:\n{metrics}"));
    let stopped = help.find("stopped:").unwrap_or_else(|| panic!("{help}"));
    assert!(
        help[..stopped].contains("reconcile_max_duration"),
        "the help does not count an over-time reconcile as failed: {help}"
    );
    assert!(
        !help[stopped..].contains("reconcile_max_duration"),
        "the help counts an over-time reconcile as stopped: {help}"
    );

    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("**Metrics** (`/metrics`)").unwrap();
    let end = start
        + readme[start..]
            .find("prometheus/seatwarden.rules.yml")
            .unwrap();
    let section = &readme[start..end];
    assert!(
        section.contains("`schedule.reconcile_max_duration` counts as `failed`"),
        "README's metrics do not say an over-time reconcile counts as failed:\n{section}"
    );
    assert!(
        !section.contains("SIGTERM came while it wrote"),
        "a job still reading when SIGTERM comes is stopped too:\n{section}"
    );
}
