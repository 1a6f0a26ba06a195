//! The daemon's HTTP listener.
//!
//! - `GET /healthz` — 200 while the scheduler loop is ticking (liveness).
//! - `GET /readyz` — 200 when the state database is writable and a reconcile
//!   succeeded since the last two scheduled fires, with one more interval of grace
//!   (readiness); else 503 and why.
//! - `GET /metrics` — Prometheus text format (the metrics: [`super::catalog`]);
//!   the ledger, circuit, running-job and awaiting-approval gauges are read fresh
//!   at each scrape.
//! - `GET /status` — the same JSON as `seatwarden status --format json`; with
//!   `http.trigger_token_file` set, only with that bearer token, and without it only
//!   on a loopback listener and to a request whose `Host` is `localhost` or a
//!   loopback address (it names the people being deprovisioned; the `Host` check
//!   keeps a DNS-rebinding web page in a local browser out).
//! - `POST /reconcile` — starts a reconcile now; only when `http.trigger_token_file`
//!   is set, with `Authorization: Bearer <token>` compared in constant time.
//!
//! The handlers that read the state database (`/readyz`, `/metrics`, `/status`)
//! read it on the blocking pool: a prune's VACUUM can hold it for seconds, and the
//! async workers are shared with `/healthz` and the scheduler.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use secrecy::ExposeSecret;

use super::{RECONCILE, Shared};
use crate::schedule::next_fire;
use crate::sla;
use crate::store::{RunKind, StoreError};

pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/reconcile", post(trigger))
        .with_state(shared);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "HTTP listener stopped with an error");
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(body.into()))
        .unwrap_or_default()
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec_pretty(body) {
        Ok(bytes) => Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(bytes))
            .unwrap_or_default(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.alive() {
        text(StatusCode::OK, "ok\n")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "scheduler loop is not ticking\n",
        )
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    // The database, which a prune's VACUUM can hold for seconds: not on the async
    // workers that /healthz and the scheduler share.
    match tokio::task::spawn_blocking(move || readiness(&shared)).await {
        Ok(Ok(())) => text(StatusCode::OK, "ready\n"),
        Ok(Err(why)) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        Err(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("readiness check failed: {e}\n"),
        ),
    }
}

/// Ready: the database takes writes and no reconcile is overdue (see
/// [`reconcile_overdue`]).
fn readiness(shared: &Shared) -> Result<(), String> {
    let now = shared.now();
    let settings = shared.settings();
    shared
        .with_db(|db| db.probe_writable())
        .map_err(|e| format!("state database not writable: {e}"))?;
    let last = shared
        .with_db(|db| db.jobs())
        .map_err(|e| format!("reading jobs: {e}"))?
        .into_iter()
        .find(|j| j.name == RECONCILE)
        .and_then(|j| j.last_success_at)
        .ok_or("no reconcile has succeeded yet")?;
    match reconcile_overdue(&settings.reconcile, settings.timezone, last, now) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// Why the reconcile is overdue at `now`, if it is: the two scheduled fires after
/// the last success have passed, and one more interval for the second run to
/// finish. Measured on the schedule itself, so business hours (`*/30 8-18 * * 1-5`)
/// are not overdue overnight, and a run longer than its interval (the next fire is
/// skipped) is not either. A schedule with no next fire (the configuration
/// refuses one that never fires) runs no more reconciles: not ready.
fn reconcile_overdue(
    schedule: &crate::schedule::Schedule,
    tz: chrono_tz::Tz,
    last_success: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    let never = || {
        format!(
            "the reconcile schedule {:?} has no run after the last success ({last_success}): \
             no reconcile will run",
            schedule.pattern()
        )
    };
    let Some(first) = next_fire(schedule, tz, last_success) else {
        return Some(never());
    };
    let Some(second) = next_fire(schedule, tz, first) else {
        return Some(never());
    };
    let deadline = second + (second - first);
    (now > deadline).then(|| {
        format!(
            "no successful reconcile since {} ({} minutes ago); the scheduled runs at {first} \
             and {second} have passed",
            last_success,
            (now - last_success).num_minutes()
        )
    })
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    // The gauges are read from the state database, which a prune's VACUUM can hold
    // for seconds: not on the async workers that /healthz and the scheduler share.
    let refreshed = Arc::clone(&shared);
    if let Err(e) = tokio::task::spawn_blocking(move || refresh_gauges(&refreshed)).await {
        tracing::error!(error = %e, "refreshing the metrics gauges");
    }
    match &shared.metrics {
        Some(handle) => {
            handle.run_upkeep();
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(Body::from(handle.render()))
                .unwrap_or_default()
        }
        None => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed\n",
        ),
    }
}

/// The gauges read from the state database at each scrape.
fn refresh_gauges(shared: &Shared) {
    let now = shared.now();
    if let Ok(open) = shared.with_db(|db| db.open_deprovisions()) {
        let (pending, overdue) = sla::open_counts(&open, now);
        metrics::gauge!("seatwarden_deprovisions_pending").set(pending as f64);
        metrics::gauge!("seatwarden_deprovisions_overdue").set(overdue as f64);
    }
    if let Some(awaiting) = awaiting_approval(shared) {
        metrics::gauge!("seatwarden_actions_awaiting_approval").set(awaiting as f64);
    }
    let config = shared.config();
    if let Ok((circuit, _)) = shared.with_db(|db| crate::safety::circuit_state(db, &config, now)) {
        metrics::gauge!("seatwarden_circuit_state").set(f64::from(circuit.gauge()));
    }
    for (name, counters) in &shared.counters {
        metrics::gauge!("seatwarden_job_running", "job" => *name).set(if counters.is_running() {
            1.0
        } else {
            0.0
        });
    }
}

/// Held actions of the last reconcile that wait for a human
/// ([`Report::awaiting_approval`](crate::report::Report::awaiting_approval)). Read from its stored report at
/// every scrape, which `approve` and `reject` bring up to date: a decided action
/// stops counting at once, not at the next reconcile. `None` while the last
/// reconcile has no report (still running, or failed before it): the gauge keeps
/// the value it had. The report is read after the database is let go.
fn awaiting_approval(shared: &Shared) -> Option<usize> {
    let last = shared.with_db(|db| -> Result<_, StoreError> {
        match db.latest_run(&[RunKind::Reconcile])? {
            Some(run) => Ok(Some(db.report(run.id)?)),
            None => Ok(None),
        }
    });
    match last.ok()? {
        // No reconcile yet: nothing waits.
        None => Some(0),
        Some(json) => crate::report::awaiting_approval_in(&json?).ok(),
    }
}

/// Whether a request may read `/status`, which names the people being
/// deprovisioned: with a token configured (`http.trigger_token_file`), only with it;
/// without one, only on a loopback listener (the default), and only when the
/// request's `Host` ([`host`]) is `localhost` or a loopback address. A loopback
/// listener alone is not enough: any local process can connect, including a web
/// page in a browser on this machine that reaches it through a DNS name rebound to
/// 127.0.0.1 — its requests carry that name as their `Host`.
fn status_refused(
    loopback: bool,
    host: Option<&str>,
    expected: Option<&str>,
    given: &str,
) -> Option<Response> {
    match expected {
        Some(expected) if !constant_time_eq(given.as_bytes(), expected.as_bytes()) => Some(text(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (GET /status takes the token of \
             http.trigger_token_file)\n",
        )),
        Some(_) => None,
        None if loopback && host.is_some_and(host_is_loopback) => None,
        None if loopback => Some(text(
            StatusCode::MISDIRECTED_REQUEST,
            "GET /status without a bearer token answers only Host: localhost or a loopback \
             address (a request for another name may come from a web page); set \
             http.trigger_token_file to read it under another name\n",
        )),
        None => Some(text(
            StatusCode::FORBIDDEN,
            "GET /status names the people being deprovisioned: on a listener that is not \
             loopback it needs a bearer token; set http.trigger_token_file\n",
        )),
    }
}

/// The request's `Host` header, if it is one readable value.
fn host(headers: &HeaderMap) -> Option<&str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next()?;
    if hosts.next().is_some() {
        return None;
    }
    host.to_str().ok()
}

/// `localhost`, a loopback IPv4 literal or `[::1]`, each with or without a port.
fn host_is_loopback(host: &str) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((ip, rest)) => (ip, rest),
            None => return false,
        },
        None => host
            .find(':')
            .map_or((host, ""), |colon| host.split_at(colon)),
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
        });
    if !port_ok {
        return false;
    }
    if host.starts_with('[') {
        return name
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    }
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The bearer token of a request, or "" (the scheme is case-insensitive, RFC 9110
/// §11.1).
fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim())
}

async fn status(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let expected = match shared.trigger_token.read() {
        Ok(token) => token.clone(),
        Err(_) => None,
    };
    let loopback = shared.settings().listen.ip().is_loopback();
    if let Some(refusal) = status_refused(
        loopback,
        host(&headers),
        expected.as_ref().map(|t| t.expose_secret()),
        bearer(&headers),
    ) {
        return refusal;
    }
    let now = shared.now();
    let config = shared.config();
    // Validated when the configuration was loaded.
    let tz = config.report_timezone().unwrap_or(chrono_tz::UTC);
    let delete_after = config.delete_after();
    // On the blocking pool, as /metrics reads the database.
    let collected = tokio::task::spawn_blocking(move || {
        let idle_writer = crate::store::WriterLock::try_acquire(&config.state.path)?;
        shared.with_db(|db| super::status::collect(db, now, tz, delete_after, idle_writer.as_ref()))
    })
    .await;
    match collected {
        Ok(Ok(status)) => json(StatusCode::OK, &status),
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn trigger(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let expected = match shared.trigger_token.read() {
        Ok(token) => token.clone(),
        Err(_) => None,
    };
    let Some(expected) = expected else {
        return text(
            StatusCode::NOT_FOUND,
            "POST /reconcile is disabled: set http.trigger_token_file\n",
        );
    };
    let given = bearer(&headers);
    if !constant_time_eq(given.as_bytes(), expected.expose_secret().as_bytes()) {
        return text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n");
    }
    if shared.trigger(RECONCILE) {
        text(StatusCode::ACCEPTED, "reconcile started\n")
    } else {
        text(
            StatusCode::CONFLICT,
            "a reconcile is already running (or the daemon is stopping)\n",
        )
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a
/// guessed token was right. (The length is not secret.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::{constant_time_eq, host_is_loopback, reconcile_overdue, status_refused};
    use crate::schedule::Schedule;
    use axum::http::StatusCode;
    use chrono::TimeZone;

    /// Readiness follows the schedule: a business-hours reconcile is not overdue
    /// over the weekend, and is once Monday's runs have passed without a success.
    #[test]
    fn a_reconcile_is_overdue_only_after_its_scheduled_runs_passed() {
        let tz = chrono_tz::Europe::Berlin;
        let at = |d: u32, h: u32, m: u32| {
            tz.with_ymd_and_hms(2026, 11, d, h, m, 0)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        let hours = Schedule::parse("*/30 8-18 * * 1-5").unwrap();
        // Friday 27 November 18:30 the last success.
        let friday = at(27, 18, 30);
        assert_eq!(reconcile_overdue(&hours, tz, friday, at(28, 12, 0)), None);
        assert_eq!(reconcile_overdue(&hours, tz, friday, at(30, 8, 59)), None);
        let late = reconcile_overdue(&hours, tz, friday, at(30, 9, 1)).unwrap();
        assert!(late.contains("have passed"), "{late}");
        // Every 30 minutes: overdue 90 minutes after the last success.
        let every = Schedule::parse("0 */30 * * * *").unwrap();
        assert_eq!(
            reconcile_overdue(&every, tz, at(30, 10, 0), at(30, 11, 29)),
            None
        );
        assert!(reconcile_overdue(&every, tz, at(30, 10, 0), at(30, 11, 31)).is_some());
        // A schedule with no next fire is not "never overdue": no reconcile comes.
        let never = Schedule::parse_unchecked("0 9 31 2 *").unwrap();
        let why = reconcile_overdue(&never, tz, friday, at(27, 18, 31)).unwrap();
        assert!(why.contains("no run after"), "{why}");
    }

    /// `/status` names leavers: with a token only with it; without one only on
    /// loopback.
    #[test]
    fn status_needs_the_token_when_one_is_set_and_loopback_when_not() {
        let refused = |loopback, expected, given| {
            status_refused(loopback, Some("localhost:9464"), expected, given).map(|r| r.status())
        };
        assert_eq!(refused(true, None, ""), None);
        assert_eq!(refused(false, None, ""), Some(StatusCode::FORBIDDEN));
        assert_eq!(
            refused(false, None, "anything"),
            Some(StatusCode::FORBIDDEN)
        );
        for loopback in [true, false] {
            assert_eq!(
                refused(loopback, Some("s3cret"), ""),
                Some(StatusCode::UNAUTHORIZED)
            );
            assert_eq!(
                refused(loopback, Some("s3cret"), "s3cre"),
                Some(StatusCode::UNAUTHORIZED)
            );
            assert_eq!(refused(loopback, Some("s3cret"), "s3cret"), None);
        }
    }

    /// Without a token, a loopback listener answers `/status` only to a request
    /// for a loopback name: a DNS-rebinding page sends its own name as `Host`.
    #[test]
    fn status_without_a_token_needs_a_loopback_host() {
        let refused = |host| status_refused(true, host, None, "").map(|r| r.status());
        for host in [
            "localhost",
            "localhost:9464",
            "LOCALHOST:9464",
            "127.0.0.1",
            "127.0.0.1:9464",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:9464",
        ] {
            assert_eq!(refused(Some(host)), None, "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:9464",
            "localhost.attacker.example",
            "127.0.0.1.nip.io:9464",
            "localhost:",
            "localhost:94a",
            "localhost:9464:1",
            "[::1",
            "[::1]x",
            "[::2]:9464",
            "::1",
            "10.0.0.1:9464",
            "",
        ] {
            assert_eq!(
                refused(Some(host)),
                Some(StatusCode::MISDIRECTED_REQUEST),
                "{host}"
            );
        }
        assert_eq!(refused(None), Some(StatusCode::MISDIRECTED_REQUEST));
        // With the token, the Host does not matter.
        assert_eq!(
            status_refused(true, Some("attacker.example"), Some("t"), "t").map(|r| r.status()),
            None
        );
        assert!(host_is_loopback("[::1]:1"));
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
