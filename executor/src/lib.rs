//! Vertex executor.
//!
//! Owns running one build vertex against the store: COPY/ADD file operations into a fresh
//! layer ([`copy`], with `--chmod` values in [`chmod`]), RUN steps in the `runtime` sandbox ([`run`]), the in-root path helpers they
//! share ([`rootfs`]), `--chown` name resolution from an image's own files ([`users`]) and the
//! wildcard matcher COPY sources use ([`glob`]). Every op reads its parent filesystem through an
//! overlay of the parent's snapshots and writes only into a fresh upperdir, which the store then
//! turns into a layer and a snapshot by rename (`Store::commit_upperdir`): no rootfs is copied.
//!
//! It must not decide what to run or in which order (that is the solver's job), print anything,
//! or run a binary of an image outside the sandbox.

pub mod chmod;
pub mod copy;
pub mod fetch;
pub mod glob;
pub mod mountns;
pub mod rootfs;
pub mod run;
pub mod users;

use std::path::PathBuf;

/// Errors of the executor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] lade_cache::Error),
    #[error(transparent)]
    Runtime(#[from] lade_runtime::Error),
    /// The RUN command did not succeed.
    #[error("process {command:?} did not complete successfully: {status}{}", detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Failed {
        command: String,
        status: lade_runtime::ExitStatus,
        detail: Option<String>,
    },
    /// A file operation failed on an in-image path.
    #[error("{what} {path}: {source}")]
    Fs {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Host-side I/O failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Setting up the private mount namespace or an overlay failed.
    #[error("{what}: {source}")]
    Mount {
        what: String,
        #[source]
        source: nix::errno::Errno,
    },
    /// A COPY/ADD source matched nothing.
    #[error("{0}: not found")]
    NotFound(String),
    /// The user asked for something that cannot be done (bad --chown, copying a directory onto
    /// a file, ...).
    #[error("{0}")]
    Invalid(String),
    /// The step was cancelled (another step failed, or Ctrl-C).
    #[error("cancelled")]
    Cancelled,
}

/// Result with the executor's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn fs_err<'a>(
    what: &'static str,
    path: &'a str,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Fs {
        what,
        path: path.to_string(),
        source,
    }
}

pub(crate) fn io_err<'a>(
    what: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Removes an overlay work dir (overlayfs leaves `work/work` at mode 000).
pub(crate) fn sandbox_remove(p: &std::path::Path) {
    let _ = lade_runtime::remove_tree(p);
}
