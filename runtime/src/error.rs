//! The crate's error type.

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

/// Errors of the sandbox runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is wrong; nothing was started.
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    /// `USER[:GROUP]` could not be resolved in the image.
    #[error("{0}")]
    User(String),
    /// A security check refused the spec or the rootfs (symlinked mount target, magic link).
    #[error("refused: {0}")]
    Refused(String),
    /// A system call failed; `what` names the step.
    #[error("{what}: {errno}")]
    Sys { what: String, errno: Errno },
    /// Host-side file work failed; `what` names the file and step.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The sandbox could not start its process; `kind` says how the command should exit
    /// (see [`StartErrorKind::exit_code`]).
    #[error("{message}")]
    Start {
        kind: StartErrorKind,
        message: String,
    },
    /// The sandbox init broke the protocol or died unexpectedly.
    #[error("sandbox init: {0}")]
    Protocol(String),
    /// Container state dir problems (unknown id, still running, corrupt state file).
    #[error("{0}")]
    Container(String),
}

/// Why a sandbox did not start its process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartErrorKind {
    /// The command was not found (docker exits 127).
    NotFound,
    /// The command could not be executed (docker exits 126).
    PermissionDenied,
    /// Anything else while setting the sandbox up (docker exits 125).
    Setup,
}

impl StartErrorKind {
    /// The exit code `docker run` gives for this failure.
    pub fn exit_code(self) -> i32 {
        match self {
            StartErrorKind::NotFound => 127,
            StartErrorKind::PermissionDenied => 126,
            StartErrorKind::Setup => 125,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn sys(what: impl Into<String>) -> impl FnOnce(Errno) -> Error {
        let what = what.into();
        move |errno| Error::Sys { what, errno }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
