//! The daemon's HTTP listener.
//!
//! - `GET /healthz` — 200 while the scheduler loop is ticking (liveness), and
//!   through a stop while the running jobs finish their writes (at most
//!   [`super::STOP_GRACE`]): a probe must not kill a daemon stopping cleanly.
//! - `GET /readyz` — 200 when the state database is the file the daemon opened
//!   at start (not deleted or replaced since: [`super::DatabaseFile`]) and
//!   writable, and a reconcile succeeded since the last two scheduled fires, with
//!   one more interval of grace (readiness), counted on the time the daemon has
//!   seen pass when the wall clock was stepped back after that success
//!   ([`success_as_of`]); else 503 and why.
//! - `GET /metrics` — Prometheus text format (the metrics: [`super::catalog`]);
//!   the ledger, circuit, running-job and awaiting-approval gauges are read fresh
//!   at each scrape.
//! - `GET /status` — the same JSON as `seatwarden status --format json`; with
//!   `http.trigger_token_file` set, only with that bearer token, and without it only
//!   on a loopback listener and to a request whose `Host` is `localhost` or a
//!   loopback address (it names the people being deprovisioned; the `Host` check
//!   keeps a DNS-rebinding web page in a local browser out).
//! - `POST /reconcile` — starts a reconcile now; only when `http.trigger_token_file`
//!   is set, with `Authorization: Bearer <token>` compared in constant time. Answers
//!   JSON ([`Triggered`]): 202 `started` or `queued` (behind another writer); 200
//!   `already_running` (with its run id once it has begun) or `already_queued` when
//!   one is under way, which the request joins: POSTs while a reconcile is queued
//!   or running coalesce into that one; 503 `stopping`.
//!
//! The listener caps its connections ([`ConnectionLimits`]: 64 at once, the rest
//! wait to be accepted), closes one whose request headers take over 10 s, and at
//! the stop gives requests being answered 5 s: a local user holding connections
//! open can neither use up the daemon's file descriptors nor hold up its stop.
//!
//! The handlers that read the state database (`/readyz`, `/metrics`, `/status`)
//! read it on the blocking pool and on connections of their own (`/readyz` on
//! one the others do not queue it behind): a prune's VACUUM can hold it for
//! seconds, the async workers are shared with `/healthz` and the scheduler, and
//! the daemon's other connection waits for the write lock (up to the busy
//! timeout) to record a job's start or end.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use secrecy::ExposeSecret;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::{PRUNE, RECONCILE, RETRY, SWEEP, Shared};
use crate::schedule::next_fire;
use crate::sla;
use crate::store::{RunId, RunStatus, StoreError, WriterLock};

/// Limits on the listener's connections: without them a local user holding
/// connections open with an unfinished request uses up the daemon's file
/// descriptors (its SCIM and directory connections then fail) and keeps a stop
/// waiting forever.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once; further ones wait in the kernel's accept queue
    /// (holding none of the daemon's descriptors) until one closes.
    pub max_connections: usize,
    /// A request's headers must arrive within this; else the connection is closed.
    /// Also closes a kept-alive connection idle this long.
    pub header_read_timeout: Duration,
    /// After the stop, how long requests being answered get before the remaining
    /// connections are dropped.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/reconcile", post(trigger))
        .with_state(shared);
    serve_router(listener, app, stop, ConnectionLimits::default()).await;
}

/// Serves `app` on `listener` within `limits` until `stop` turns true, then lets
/// the requests being answered finish for at most `limits.shutdown_grace`.
pub(crate) async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
    limits: ConnectionLimits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        // A slot first: at the cap, nothing is accepted until a connection closes.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = stopped(&mut stop) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut stop) => break,
        };
        // Finished connections' results, so the set does not grow without end.
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors, most likely: accepting again at once would
                // spin; some may be free in a moment.
                tracing::error!(error = %e, "HTTP listener cannot accept a connection");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        connections.spawn(serve_connection(
            stream,
            app.clone(),
            stop.clone(),
            limits.header_read_timeout,
            slot,
        ));
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "HTTP connections still open after the shutdown grace; closing them"
        );
        connections.abort_all();
    }
}

/// One connection, holding its `slot` until it closes. At the stop it finishes
/// the request it is answering and closes (at once when between requests).
async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
    header_read_timeout: Duration,
    _slot: OwnedSemaphorePermit,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        _ = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
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
    if shared.alive() && shared.stopping.is_stopped() {
        text(
            StatusCode::OK,
            "ok: stopping, finishing the writes already sent\n",
        )
    } else if shared.alive() {
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

/// Ready: the database is still the one opened at start and takes writes, and
/// no reconcile is overdue (see [`reconcile_overdue`]).
pub(super) fn readiness(shared: &Shared) -> Result<(), String> {
    let now = shared.now();
    let running = shared.running();
    let settings = &running.settings;
    // Its own connection still writes to a deleted file: look at the path.
    if let Some(lost) = shared.database_lost() {
        return Err(lost);
    }
    writable(shared)?;
    let last = shared
        .with_probes(|db| db.jobs())
        .map_err(|e| format!("reading jobs: {e}"))?
        .into_iter()
        .find(|j| j.name == RECONCILE)
        .and_then(|j| j.last_success_at)
        .ok_or("no reconcile has succeeded yet")?;
    let (wall_started, at) = shared.wall_started;
    // This daemon's own record of it, if it recorded it: how long ago.
    let recorded_ago = shared
        .successes
        .lock()
        .ok()
        .and_then(|successes| successes.get(RECONCILE).copied())
        .filter(|(wall, _)| *wall == last)
        .map(|(_, recorded)| recorded.elapsed());
    let last = success_as_of(last, now, wall_started, at.elapsed(), recorded_ago);
    // Its times are for the person who asks why: on the report clock.
    let shown_in = running
        .config
        .report_timezone()
        .unwrap_or(settings.timezone);
    match reconcile_overdue(&settings.reconcile, settings.timezone, shown_in, last, now) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// How long `/readyz` keeps what it found of the database taking writes: each
/// look takes the write lock for a moment, and a flood of requests (they need no
/// token) looking back to back slowed the jobs' writes, which then wait for it.
pub(super) const WRITE_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Whether the state database takes writes ([`crate::store::Store::probe_writable`]),
/// as last seen if that was within [`WRITE_PROBE_INTERVAL`].
fn writable(shared: &Shared) -> Result<(), String> {
    let recent = shared.write_probed.lock().ok().and_then(|last| {
        last.as_ref()
            .filter(|(at, _)| at.elapsed() < WRITE_PROBE_INTERVAL)
            .map(|(_, probed)| probed.clone())
    });
    if let Some(probed) = recent {
        return probed;
    }
    let probed = shared
        .with_probes(|db| db.probe_writable())
        .map_err(|e| format!("state database not writable: {e}"));
    if let Ok(mut last) = shared.write_probed.lock() {
        *last = Some((tokio::time::Instant::now(), probed.clone()));
    }
    probed
}

/// The last success `last` as the wall clock reads at `now`. One recorded after
/// `now` was recorded before the clock stepped back (a VM restored, NTP correcting
/// a clock that ran ahead): taken as it stands, it would keep the daemon ready
/// while every reconcile fails, until the clock caught up with it. It is moved
/// back by as far as the clock now lags the time the daemon has seen pass (its
/// start on the wall clock, `wall_started`, plus how long it has run,
/// `running_for`, as for [`super::pruning_as_of`]), which puts it where the
/// stepped clock would have read it; one still after `now` (recorded before this
/// daemon started, by a clock set back since) counts as at the daemon's start.
/// One this daemon recorded `recorded_ago` (on the monotonic clock) is placed
/// that long before `now`: a clock stepped ahead and then back by as much
/// leaves it in the clock's future with no net step to move it by, and it would
/// count at the daemon's start (days ago, say: not ready until the next success).
/// On a clock that only moves forward nothing is recorded after `now`.
fn success_as_of(
    last: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
    wall_started: chrono::DateTime<chrono::Utc>,
    running_for: std::time::Duration,
    recorded_ago: Option<std::time::Duration>,
) -> chrono::DateTime<chrono::Utc> {
    if last <= now {
        return last;
    }
    if let Some(at) = recorded_ago
        .and_then(|ago| chrono::Duration::from_std(ago).ok())
        .and_then(|ago| now.checked_sub_signed(ago))
    {
        return at;
    }
    let running_for = chrono::Duration::from_std(running_for).unwrap_or(chrono::Duration::MAX);
    // The daemon's start as the clock now reads.
    let Some(started) = now.checked_sub_signed(running_for) else {
        return now;
    };
    let behind = (wall_started - started).max(chrono::Duration::zero());
    match last.checked_sub_signed(behind) {
        Some(moved) if moved <= now => moved,
        _ => started,
    }
}

/// Why the reconcile is overdue at `now`, if it is: the two scheduled fires after
/// the last success have passed, and the second run's interval for it to finish
/// (the shorter of the gaps before and after it: a night or a weekend is
/// neither's interval). Measured on the schedule itself, so business hours (`*/30 8-18 * * 1-5`)
/// are not overdue overnight, and a run longer than its interval (the next fire is
/// skipped) is not either, as long as it ends within two intervals of its start:
/// one that takes longer is reported overdue until it succeeds. A schedule with no next fire (the configuration
/// refuses one that never fires) runs no more reconciles: not ready. The times
/// in the answer are on `shown_in`'s clock (`report.timezone`), the schedule's
/// on `tz`'s.
fn reconcile_overdue(
    schedule: &crate::schedule::Schedule,
    tz: chrono_tz::Tz,
    shown_in: chrono_tz::Tz,
    last_success: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    let shown = |at| crate::model::clock_time(at, shown_in, "%Y-%m-%d %H:%M");
    let never = || {
        format!(
            "the reconcile schedule {:?} has no run after the last success ({}): \
             no reconcile will run",
            schedule.pattern(),
            shown(last_success)
        )
    };
    let Some(first) = next_fire(schedule, tz, last_success) else {
        return Some(never());
    };
    let Some(second) = next_fire(schedule, tz, first) else {
        return Some(never());
    };
    // The second run's interval to finish in: the shorter of the gaps either
    // side of it. Either may be a night or a weekend: the gap before (a
    // success just before one made the weekend the time Monday's run had to
    // finish in), or the gap after (Friday's last two runs failing kept
    // /readyz ready until Monday's first).
    let before = second - first;
    let deadline =
        second + next_fire(schedule, tz, second).map_or(before, |third| before.min(third - second));
    (now > deadline).then(|| {
        format!(
            "no successful reconcile since {} ({} minutes ago); the scheduled runs at {} \
             and {} have passed",
            shown(last_success),
            (now - last_success).num_minutes(),
            shown(first),
            shown(second)
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

/// `seatwarden_certificate_expiry_timestamp_seconds`, from the files as they are
/// now. The exporter keeps a series once set and cannot drop one: a key whose
/// file can no longer be read, or that a reload removed, is set to NaN (which
/// no alert's comparison holds for) rather than left at a date that is no
/// longer true.
fn certificate_gauges(config: &crate::config::Config) {
    static EXPORTED: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let Ok(mut exported) = EXPORTED.lock() else {
        return;
    };
    let mut dated = std::collections::BTreeSet::new();
    for expiry in crate::certificate::of_config(config).into_iter().flatten() {
        metrics::gauge!("seatwarden_certificate_expiry_timestamp_seconds", "key" => expiry.key)
            .set(expiry.not_after.timestamp() as f64);
        dated.insert(expiry.key);
    }
    for key in exported.difference(&dated) {
        metrics::gauge!("seatwarden_certificate_expiry_timestamp_seconds", "key" => *key)
            .set(f64::NAN);
    }
    exported.extend(dated);
}

/// The gauges read from the state database at each scrape.
fn refresh_gauges(shared: &Shared) {
    let now = shared.now();
    if let Ok(open) = shared.with_reads(|db| db.open_deprovisions()) {
        let (pending, overdue) = sla::open_counts(&open, now);
        metrics::gauge!("seatwarden_deprovisions_pending").set(pending as f64);
        metrics::gauge!("seatwarden_deprovisions_overdue").set(overdue as f64);
    }
    if let Ok(backlog) = shared.with_reads(|db| db.outbox_backlog()) {
        for (state, count) in super::catalog::OUTBOX_STATES.into_iter().zip([
            backlog.queued,
            backlog.retrying,
            backlog.failed,
        ]) {
            metrics::gauge!("seatwarden_outbox_messages", "state" => state).set(count as f64);
        }
        let waiting = backlog
            .oldest_queued_at
            .map_or(0, |at| (now - at).num_seconds().max(0));
        metrics::gauge!("seatwarden_outbox_oldest_pending_age_seconds").set(waiting as f64);
    }
    if let Some(awaiting) = awaiting_approval(shared) {
        metrics::gauge!("seatwarden_actions_awaiting_approval").set(awaiting as f64);
    }
    let config = shared.config();
    certificate_gauges(&config);
    if let Ok((circuit, _)) = shared.with_reads(|db| crate::safety::circuit_state(db, &config, now))
    {
        metrics::gauge!("seatwarden_circuit_state").set(f64::from(circuit.gauge()));
    }
    for (name, counters) in &shared.counters {
        metrics::gauge!("seatwarden_job_running", super::catalog::JOB_LABEL => *name)
            .set(if counters.is_running() { 1.0 } else { 0.0 });
    }
    let waits = shared.lock_waits_now();
    for name in shared
        .counters
        .keys()
        .filter(|name| super::takes_writer_lock(name))
    {
        let waited = waits
            .get(name)
            .and_then(|since| (now - *since).to_std().ok())
            .map_or(0.0, |waited| waited.as_secs_f64());
        metrics::gauge!("seatwarden_job_lock_waiting_seconds", super::catalog::JOB_LABEL => *name)
            .set(waited);
    }
}

/// Actions that wait for a human's `approve` or `reject`, whichever job held them:
/// the newest planned reconcile's ([`Report::awaiting_approval`](crate::report::Report::awaiting_approval),
/// read from its stored report, which `approve` and `reject` bring up to date, so a
/// decided action stops counting at once; from its journal while it has none:
/// still applying, or killed) and those the sweeps held since
/// ([`Store::sweep_actions_awaiting_approval`](crate::store::Store::sweep_actions_awaiting_approval)).
/// A newer reconcile that failed or was stopped before its plan (the directory
/// unreachable, say) replaced no hold ([`Store::latest_planned_reconcile`](crate::store::Store::latest_planned_reconcile)): a
/// daemon restarted into a directory outage counts what still waits, rather than
/// nothing until a reconcile succeeds. The report is parsed after the database
/// is let go.
fn awaiting_approval(shared: &Shared) -> Option<usize> {
    let read = shared.with_reads(|db| -> Result<_, StoreError> {
        let planned = db.latest_planned_reconcile()?;
        let (report, journaled) = match &planned {
            Some(run) => match db.report(run.id)? {
                Some(json) => (Some(json), 0),
                None => (None, crate::approval::awaiting_decision(db, run.id)?),
            },
            None => (None, 0),
        };
        let swept = db.sweep_actions_awaiting_approval(planned.map_or(0, |run| run.id))?;
        Ok((report, journaled, swept))
    });
    let (report, journaled, swept) = read.ok()?;
    let reconciled = match report {
        // No report: what its journal holds (none without a planned reconcile:
        // only the sweeps' holds wait).
        None => journaled,
        Some(json) => crate::report::awaiting_approval_in(&json).ok()?,
    };
    Some(reconciled + swept)
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
        None if loopback && host.is_some_and(crate::http::host_is_loopback) => None,
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
    let running = shared.running();
    let loopback = running.settings.listen.ip().is_loopback();
    if let Some(refusal) = status_refused(
        loopback,
        host(&headers),
        running.trigger_token().map(|t| t.expose_secret()),
        bearer(&headers),
    ) {
        return refusal;
    }
    let now = shared.now();
    let config = Arc::clone(&running.config);
    // Validated when the configuration was loaded.
    let tz = config.report_timezone().unwrap_or(chrono_tz::UTC);
    let settings = Arc::clone(&running.settings);
    // On the blocking pool, as /metrics reads the database.
    let collected = tokio::task::spawn_blocking(move || {
        shared.with_reads(|db| {
            super::status::collect(
                db,
                now,
                super::status::Settings::of(&config, tz, Some(settings.as_ref())),
            )
        })
    })
    .await;
    match collected {
        Ok(Ok(status)) => json(StatusCode::OK, &status),
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn trigger(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let running = shared.running();
    let Some(expected) = running.trigger_token() else {
        return text(
            StatusCode::NOT_FOUND,
            "POST /reconcile is disabled: set http.trigger_token_file\n",
        );
    };
    let given = bearer(&headers);
    if !constant_time_eq(given.as_bytes(), expected.expose_secret().as_bytes()) {
        return text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n");
    }
    // The database is read (a VACUUM can hold it): not on the async workers.
    match tokio::task::spawn_blocking(move || trigger_reconcile(&shared)).await {
        Ok((code, answer)) => json(code, &answer),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// What `POST /reconcile` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
struct Triggered {
    /// `started`; `queued` (it waits for another writer: a sweep, a retry, a prune
    /// or a command run by hand); `already_running` or `already_queued` (this
    /// request joins the reconcile that is: no second one runs); `stopping`.
    reconcile: &'static str,
    /// The reconcile's run once it has begun (a repeated POST shows it), else null.
    run_id: Option<RunId>,
    message: &'static str,
}

/// Starts a reconcile unless one is queued or running already, which the request
/// then joins: a retried or doubled POST runs no second reconcile.
fn trigger_reconcile(shared: &Shared) -> (StatusCode, Triggered) {
    let stopping = || {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Triggered {
                reconcile: "stopping",
                run_id: None,
                message: "the daemon is stopping: no reconcile starts",
            },
        )
    };
    if shared.stopping.is_stopped() {
        return stopping();
    }
    let writer_busy =
        [SWEEP, RETRY, PRUNE].into_iter().any(|name| {
            shared
                .counters
                .get(name)
                .is_some_and(|counters| counters.is_running())
        }) || crate::store::lock_is_held(&WriterLock::path(&shared.config().state.path))
            .unwrap_or(false);
    if shared.trigger(RECONCILE) {
        let answer = if writer_busy {
            Triggered {
                reconcile: "queued",
                run_id: None,
                message: "reconcile queued: it starts once the writer running now (a sweep, \
                          a prune or a command run by hand) is done; POST again or GET \
                          /status for its run id",
            }
        } else {
            Triggered {
                reconcile: "started",
                run_id: None,
                message: "reconcile started; POST again or GET /status for its run id",
            }
        };
        return (StatusCode::ACCEPTED, answer);
    }
    if shared.stopping.is_stopped() {
        return stopping();
    }
    let (running, run_id) = reconcile_in_progress(shared);
    let answer = if running {
        Triggered {
            reconcile: "already_running",
            run_id,
            message: "a reconcile is already running: this request joins it",
        }
    } else {
        Triggered {
            reconcile: "already_queued",
            run_id: None,
            message: "a reconcile is already queued (it waits for another writer): this \
                      request joins it",
        }
    };
    (StatusCode::OK, answer)
}

/// Whether the daemon's reconcile job has begun (it records its start once it
/// holds the writer locks; before, it waits for them), and its run once that is
/// recorded.
pub(super) fn reconcile_in_progress(shared: &Shared) -> (bool, Option<RunId>) {
    let read = shared.with_reads(|db| -> Result<_, StoreError> {
        let running = db
            .jobs()?
            .into_iter()
            .any(|job| job.name == RECONCILE && job.last_status == Some(RunStatus::Running));
        if !running {
            return Ok((false, None));
        }
        // Under the writer lock no other reconcile runs: a running one is this job's.
        // Else the job runs a dry run (a dry run by hand takes no writer lock: the
        // newest running one is taken as the daemon's). Not told by the settings
        // in force: the job keeps the mode it started in across a reload.
        let running_of = |kind| -> Result<Option<RunId>, StoreError> {
            Ok(db
                .latest_run(&[kind])?
                .filter(|run| run.status == RunStatus::Running)
                .map(|run| run.id))
        };
        let run = match running_of(crate::store::RunKind::Reconcile)? {
            Some(run) => Some(run),
            None => running_of(crate::store::RunKind::DryRun)?,
        };
        Ok((true, run))
    });
    // Unreadable: the job runs (its counter says so), its run unknown.
    read.unwrap_or((true, None))
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
    use super::{constant_time_eq, reconcile_overdue, status_refused, success_as_of};
    use crate::http::host_is_loopback;
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
        assert_eq!(
            reconcile_overdue(&hours, tz, tz, friday, at(28, 12, 0)),
            None
        );
        assert_eq!(
            reconcile_overdue(&hours, tz, tz, friday, at(30, 8, 59)),
            None
        );
        let late = reconcile_overdue(&hours, tz, tz, friday, at(30, 9, 1)).unwrap();
        assert!(late.contains("have passed"), "{late}");
        // Every 30 minutes: overdue 90 minutes after the last success.
        let every = Schedule::parse("0 */30 * * * *").unwrap();
        assert_eq!(
            reconcile_overdue(&every, tz, tz, at(30, 10, 0), at(30, 11, 29)),
            None
        );
        assert!(reconcile_overdue(&every, tz, tz, at(30, 10, 0), at(30, 11, 31)).is_some());
        // A schedule with no next fire is not "never overdue": no reconcile comes.
        let never = Schedule::parse_unchecked("0 9 31 2 *").unwrap();
        let why = reconcile_overdue(&never, tz, tz, friday, at(27, 18, 31)).unwrap();
        assert!(why.contains("no run after"), "{why}");
    }

    /// The time the second missed run has to finish is that run's own interval,
    /// not the gap before it: a success just before the weekend's gap made the
    /// weekend the "interval", and a reconcile failing all Friday evening and
    /// Monday stayed ready until Wednesday night.
    #[test]
    fn a_reconcile_missed_across_the_weekend_is_overdue_on_monday() {
        let tz = chrono_tz::Europe::Berlin;
        let at = |d: u32, h: u32, m: u32| {
            tz.with_ymd_and_hms(2026, 11, d, h, m, 0)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        let hours = Schedule::parse("*/30 8-18 * * 1-5").unwrap();
        // Friday 27 November 18:00 the last success; 18:30 fails, then Monday's
        // 08:00 and 08:30 too.
        let friday = at(27, 18, 0);
        assert_eq!(
            reconcile_overdue(&hours, tz, tz, friday, at(30, 8, 29)),
            None
        );
        let late = reconcile_overdue(&hours, tz, tz, friday, at(30, 8, 31)).unwrap();
        assert!(late.contains("have passed"), "{late}");
        // A weekday reconcile: Thursday's success, then Friday's and Monday's
        // runs missed: overdue once Tuesday's has come too (it was Thursday's).
        let weekdays = Schedule::parse("0 6 * * 1-5").unwrap();
        let thursday = at(26, 6, 10);
        let tuesday = at(30, 6, 0) + chrono::Duration::days(1);
        assert_eq!(
            reconcile_overdue(&weekdays, tz, tz, thursday, tuesday),
            None
        );
        assert!(
            reconcile_overdue(
                &weekdays,
                tz,
                tz,
                thursday,
                tuesday + chrono::Duration::minutes(1)
            )
            .is_some()
        );
    }

    /// Nor is the second missed run's interval the gap after it, when that is
    /// a night or a weekend: Friday's last two reconciles failing (a success at
    /// 17:30, then 18:00 and 18:30) left /readyz ready all weekend, until
    /// Monday's first run, where it was not ready from 19:00. A weekday
    /// schedule whose Thursday and Friday runs fail is overdue on Saturday.
    #[test]
    fn a_reconcile_missed_before_the_weekend_is_overdue_before_it() {
        let tz = chrono_tz::Europe::Berlin;
        let at = |d: u32, h: u32, m: u32| {
            tz.with_ymd_and_hms(2026, 11, d, h, m, 0)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        let hours = Schedule::parse("*/30 8-18 * * 1-5").unwrap();
        let friday = at(27, 17, 30);
        assert_eq!(
            reconcile_overdue(&hours, tz, tz, friday, at(27, 18, 59)),
            None
        );
        let late = reconcile_overdue(&hours, tz, tz, friday, at(27, 19, 1)).unwrap();
        assert!(late.contains("have passed"), "{late}");
        let weekdays = Schedule::parse("0 6 * * 1-5").unwrap();
        let wednesday = at(25, 6, 10);
        assert_eq!(
            reconcile_overdue(&weekdays, tz, tz, wednesday, at(28, 6, 0)),
            None
        );
        assert!(reconcile_overdue(&weekdays, tz, tz, wednesday, at(28, 6, 1)).is_some());
    }

    /// Why /readyz is not ready is read by the person who asks: its times are on
    /// the report clock with their offset (they were UTC alone, and the
    /// scheduled runs' were chrono's `2026-11-30 07:00:00 UTC`), while the schedule
    /// keeps its own zone.
    #[test]
    fn the_readiness_text_shows_its_times_on_the_report_clock() {
        let tz = chrono_tz::Europe::Berlin;
        let at = |d: u32, h: u32, m: u32| {
            tz.with_ymd_and_hms(2026, 11, d, h, m, 0)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        let hours = Schedule::parse("*/30 8-18 * * 1-5").unwrap();
        let late = reconcile_overdue(
            &hours,
            tz,
            chrono_tz::Asia::Kolkata,
            at(27, 18, 30),
            at(30, 9, 1),
        )
        .unwrap();
        assert_eq!(
            late,
            "no successful reconcile since 2026-11-27 23:00 +05:30 (IST) (3751 minutes ago); \
             the scheduled runs at 2026-11-30 12:30 +05:30 (IST) and 2026-11-30 13:00 +05:30 \
             (IST) have passed"
        );
        let never = Schedule::parse_unchecked("0 9 31 2 *").unwrap();
        let why = reconcile_overdue(&never, tz, tz, at(27, 18, 30), at(27, 18, 31)).unwrap();
        assert!(
            why.contains("after the last success (2026-11-27 18:30 +01:00 (CET))"),
            "{why}"
        );
    }

    /// A last success the clock reads in the future, from before this daemon
    /// started (a clock set back since), counts as at the daemon's start; one in
    /// the past is as recorded.
    #[test]
    fn a_success_recorded_before_the_start_in_the_clocks_future_counts_at_the_start() {
        let at = |h: u32| chrono::Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0).unwrap();
        let hour = std::time::Duration::from_secs(3600);
        // Started 09:00 on a clock already right; the last success read 15:00.
        assert_eq!(success_as_of(at(15), at(10), at(9), hour, None), at(9));
        assert_eq!(success_as_of(at(8), at(10), at(9), hour, None), at(8));
        // Stepped six hours ahead and back: the 15:00 success this daemon
        // recorded twenty minutes ago (on the monotonic clock) was at 09:40.
        let twenty = std::time::Duration::from_secs(20 * 60);
        assert_eq!(
            success_as_of(at(15), at(10), at(9), hour, Some(twenty)),
            at(9) + chrono::Duration::minutes(40)
        );
        // One in the past is as recorded, whoever recorded it.
        assert_eq!(
            success_as_of(at(8), at(10), at(9), hour, Some(twenty)),
            at(8)
        );
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

    mod limits {
        use std::time::Duration;

        use axum::Router;
        use axum::routing::get;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::{TcpListener, TcpStream};
        use tokio::time::{Instant, timeout};

        use super::super::{ConnectionLimits, serve_router};

        const PARTIAL: &[u8] = b"GET /ok HTTP/1.1\r\n";
        const WHOLE: &[u8] = b"GET /ok HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

        /// A listener serving `GET /ok` within `limits`, its address, and its stop.
        async fn listening(
            limits: ConnectionLimits,
        ) -> (
            std::net::SocketAddr,
            tokio::sync::watch::Sender<bool>,
            tokio::task::JoinHandle<()>,
        ) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let app = Router::new().route("/ok", get(|| async { "ok" }));
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let server = tokio::spawn(serve_router(listener, app, stopped, limits));
            (addr, stop, server)
        }

        async fn sending(addr: std::net::SocketAddr, bytes: &[u8]) -> TcpStream {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(bytes).await.unwrap();
            stream
        }

        /// Paused time: the runtime jumps ahead whenever every task waits, so a
        /// connection that is never closed shows up as the test's own timeout.
        #[tokio::test(start_paused = true)]
        async fn a_request_whose_headers_never_end_is_closed_after_the_header_timeout() {
            let (addr, _stop, _server) = listening(ConnectionLimits {
                max_connections: 4,
                header_read_timeout: Duration::from_secs(10),
                shutdown_grace: Duration::from_secs(5),
            })
            .await;
            let started = Instant::now();
            let mut stalled = sending(addr, PARTIAL).await;
            let mut answer = Vec::new();
            timeout(Duration::from_secs(60), stalled.read_to_end(&mut answer))
                .await
                .expect("the stalled connection is still open after 60 s")
                .unwrap();
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
                "closed after {waited:?}"
            );
            // The listener still serves whole requests.
            let mut whole = sending(addr, WHOLE).await;
            let mut answer = String::new();
            whole.read_to_string(&mut answer).await.unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }

        #[tokio::test(start_paused = true)]
        async fn a_stalled_connection_does_not_hold_up_the_stop() {
            let (addr, stop, server) = listening(ConnectionLimits {
                max_connections: 4,
                header_read_timeout: Duration::from_secs(3600),
                shutdown_grace: Duration::from_secs(5),
            })
            .await;
            let _stalled = sending(addr, PARTIAL).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let stopping = Instant::now();
            stop.send(true).unwrap();
            timeout(Duration::from_secs(60), server)
                .await
                .expect("the listener still waits for the stalled connection after 60 s")
                .unwrap();
            assert!(stopping.elapsed() <= Duration::from_secs(6));
        }

        /// At the cap, a further connection's request is not answered until one of
        /// the connections being served closes.
        #[tokio::test(start_paused = true)]
        async fn connections_beyond_the_cap_wait_until_one_closes() {
            let (addr, _stop, _server) = listening(ConnectionLimits {
                max_connections: 2,
                header_read_timeout: Duration::from_secs(3600),
                shutdown_grace: Duration::from_secs(5),
            })
            .await;
            let first = sending(addr, PARTIAL).await;
            let _second = sending(addr, PARTIAL).await;
            let mut third = sending(addr, WHOLE).await;
            let mut byte = [0u8; 1];
            assert!(
                timeout(Duration::from_secs(60), third.read(&mut byte))
                    .await
                    .is_err(),
                "a connection beyond the cap was answered"
            );
            drop(first);
            let mut answer = Vec::new();
            timeout(Duration::from_secs(60), third.read_to_end(&mut answer))
                .await
                .expect("the waiting connection was not served after one closed")
                .unwrap();
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
    }
}
