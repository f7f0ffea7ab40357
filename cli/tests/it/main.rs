//! The one integration-test binary: drives the real `lade` binary end to end.
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod architecture;
mod badinput;
mod build;
mod common;
mod difftest;
mod diskfull;
mod login;
mod parse;
mod registry;
mod run;
mod sandbox_init;
mod store;
