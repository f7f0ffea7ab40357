//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// Path of the `lade` binary built for this test run.
pub fn lade_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lade"))
}

/// A `Command` for the `lade` binary.
pub fn lade() -> Command {
    Command::new(lade_bin())
}

/// The workspace root (parent of `cli/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli has a parent directory")
        .to_path_buf()
}
