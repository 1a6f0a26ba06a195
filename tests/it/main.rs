//! The one integration test binary (links once). Modules by area.

mod cli;
mod config;
mod core;
mod daemon;
mod demo;
mod directory;
mod email;
mod export;
mod fixtures;
mod interop;
mod report;
mod resume;
mod safety;
mod sandbox;
mod store;
mod verify;
mod workspace;
