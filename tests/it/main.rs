//! The one integration test binary (links once). Modules by area.

mod cli;
mod config;
mod connectors;
mod core;
mod cursor_paging;
mod daemon;
mod demo;
mod directory;
mod email;
mod entra;
mod export;
mod fixtures;
mod group_members;
mod interop;
mod ldap;
mod ldap_ad;
mod okta;
mod packaging;
mod report;
mod resume;
mod safety;
mod sandbox;
mod scim_directory;
mod store;
mod verify;
mod workspace;
