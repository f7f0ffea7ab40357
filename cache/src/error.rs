//! The one error type of `lade-cache`.

use std::path::PathBuf;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error, with what was being done and on which path.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A syscall on a path inside an extraction root failed.
    #[error("{what} {path:?}: {source}")]
    Sys {
        what: &'static str,
        path: String,
        #[source]
        source: nix::errno::Errno,
    },
    /// Not a valid `algorithm:hex` digest.
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest(String),
    /// Not a valid image reference.
    #[error("invalid reference {input:?}: {reason}")]
    InvalidReference { input: String, reason: String },
    /// Content did not hash to what it claimed.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}; the input is corrupt or was tampered with")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// Content had another size than announced.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}; the input is truncated or corrupt")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    /// A tar archive or layer is malformed or unsafe.
    #[error("bad archive entry {entry:?}: {reason}")]
    BadEntry { entry: String, reason: String },
    /// The input is not a format we can read.
    #[error("{0}")]
    Format(String),
    /// More bytes than allowed (decompression bomb, oversized JSON).
    #[error("{what} exceeds the limit of {limit} bytes; refusing it (raise the limit if it is legitimate)")]
    TooLarge { what: String, limit: u64 },
    /// A JSON document could not be (de)serialised.
    #[error("invalid JSON in {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// An image, layer, blob or name is not in the store.
    #[error("{0}")]
    NotFound(String),
    /// The store is locked by another process and the operation asked not to wait.
    #[error("store {} is in use by another lade process; try again when it is done", .0.display())]
    Busy(PathBuf),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds path context to `std::io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            what,
            path: path.into(),
            source,
        })
    }
}

/// Adds path context to nix results.
pub(crate) trait SysContext<T> {
    fn sys(self, what: &'static str, path: &str) -> Result<T>;
}

impl<T> SysContext<T> for nix::Result<T> {
    fn sys(self, what: &'static str, path: &str) -> Result<T> {
        self.map_err(|source| Error::Sys {
            what,
            path: path.to_string(),
            source,
        })
    }
}
