//! The registry crate against the real reference registry (Debian's `docker-registry`),
//! started per test by `lade_registry::testing`.
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod auth;
mod common;
mod faults;
mod images;
mod push_pull;
