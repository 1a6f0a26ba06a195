//! seatwarden keeps a SCIM 2.0 workspace's accounts, roles and group access in line
//! with the company directory.
//!
//! One run is a pipeline (see ARCHITECTURE.md):
//!
//! ```text
//! directory ──snapshot──┐
//!                       ├─► store ─► policy ─► plan ─► guard ─► apply ─► verify ─► report
//! workspace ──snapshot──┘
//! ```
//!
//! Layers, lowest first; a module never imports one above it:
//! - [`model`]: plain data (identities, accounts, groups, links, actions).
//! - the pure core, no I/O and no clock: [`policy`] (desired state), [`plan`]
//!   (diff), [`guard`] (safety rules), [`circuit`] (the apply-time circuit
//!   breaker's rules), [`sla`] (the deprovisioning ledger's rules: due times,
//!   retries, escalation), [`names`] (names that differ only in characters that
//!   do not show, for every directory source and the guard).
//! - edges: [`directory`] (sources of truth), [`workspace`] (SCIM 2.0 client),
//!   [`store`] (SQLite state and journal), [`retry`] (transient-failure policy),
//!   [`http`] (the HTTP client and helpers the remote connectors share).
//! - [`apply`] (journaled executor and verification), [`report`] (drift reports,
//!   renderers and the digest), [`mail`] (SMTP through the outbox), [`alert`]
//!   (immediate alerts with a quiet period, resolutions held while a condition
//!   flaps), [`export`] (access review).
//! - [`sandbox`] (in-process SCIM 2.0 workspace with fault injection) and
//!   [`synth`] (synthetic data) for the demo, tests and benchmarks.
//! - [`safety`]: the safety net's steps inside a run (source and workspace
//!   sanity, 24 h counts, settle window, circuit persistence, audit).
//! - [`approval`]: approve / reject held actions (re-checked first), resume the
//!   circuit breaker; [`explain`]: the single-person view.
//! - [`sweep`]: same-day deprovisioning between reconciles (the fast path).
//! - wiring: [`run`] (one reconciliation run), [`demo`], [`config`], [`cli`],
//!   [`connect`] (`check-config --connect`: each connection tested, read-only),
//!   [`certificate`] (when the certificate files the configuration names run out),
//!   [`logging`] (stderr, with journald priorities under systemd);
//!   [`schedule`] (cron in a time zone) and [`daemon`] (the long-running worker:
//!   scheduler loop, jobs, health and metrics endpoints, email).

// The module docs are written for whoever reads and changes the code, and link the
// private helpers they describe: `cargo doc --document-private-items` follows them
// (CI builds the docs so, with warnings denied).
#![allow(rustdoc::private_intra_doc_links)]

/// `print!` for command output: returns the `io::Error` instead of panicking when
/// stdout is closed (`seatwarden plan | head`), so the command ends quietly.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` for command output; see [`out!`].
macro_rules! outln {
    () => {
        $crate::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes command output to stdout (see `out!`).
pub fn write_stdout(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_fmt(args)?;
    stdout.flush()
}

/// Whether `error` is stdout closed by its reader (see `out!`).
pub fn is_closed_stdout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        next = e.source();
    }
    false
}

pub mod alert;
pub mod apply;
pub mod approval;
pub mod certificate;
pub mod circuit;
pub mod cli;
pub mod config;
pub mod connect;
pub mod daemon;
pub mod demo;
pub mod directory;
pub mod explain;
pub mod export;
pub mod guard;
pub mod http;
pub mod logging;
pub mod mail;
pub mod model;
pub mod names;
pub mod plan;
pub mod policy;
pub mod report;
pub mod retry;
pub mod run;
pub mod safety;
pub mod sandbox;
pub mod schedule;
pub mod sla;
pub mod store;
pub mod sweep;
pub mod synth;
pub mod workspace;

/// mimalloc instead of glibc's allocator: a run moves many short-lived JSON pages,
/// strings and maps between threads, and glibc spent about a third of a 10k
/// reconcile's CPU in `malloc`/`free` (`perf`, BENCHMARKS.md). Declared in the
/// library so the binary, the tests and the benchmarks all run on the same one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
