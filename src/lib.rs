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
//!   (diff), [`guard`] (safety rules).
//! - edges: [`directory`] (sources of truth), [`workspace`] (SCIM 2.0 client),
//!   [`store`] (SQLite state and journal), [`retry`] (transient-failure policy),
//!   [`http`] (the HTTP client and helpers the remote connectors share).
//! - [`apply`] (journaled executor and verification), [`report`] (drift reports).
//! - [`sandbox`] (in-process SCIM 2.0 workspace with fault injection) and
//!   [`synth`] (synthetic data) for the demo, tests and benchmarks.
//! - wiring: [`run`] (one reconciliation run), [`demo`], [`config`], [`cli`].

pub mod apply;
pub mod cli;
pub mod config;
pub mod demo;
pub mod directory;
pub mod guard;
pub mod http;
pub mod model;
pub mod plan;
pub mod policy;
pub mod report;
pub mod retry;
pub mod run;
pub mod sandbox;
pub mod store;
pub mod synth;
pub mod workspace;
