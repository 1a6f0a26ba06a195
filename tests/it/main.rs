//! The one integration test binary (links once). Modules by area.

mod cli;
mod config;
mod connectors;
mod core;
mod demo;
mod directory;
mod entra;
mod fixtures;
mod interop;
mod okta;
mod report;
mod resume;
mod sandbox;
mod store;
mod verify;
mod workspace;
