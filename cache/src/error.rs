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
    /// More bytes than allowed (decompression bomb, oversized JSON). `setting` names the
    /// environment variable that sets the limit, when one does.
    #[error("{what} exceeds the limit of {limit} bytes; refusing it ({})", raise_hint(*.setting))]
    TooLarge {
        what: String,
        limit: u64,
        setting: Option<&'static str>,
    },
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
    /// The filesystem is full (`ENOSPC`) or the user's disk quota is used up (`EDQUOT`). Nothing
    /// half-written is kept: the temp files of the failed operation are removed.
    #[error(
        "{}: cannot {what} {}; free space on that filesystem (`lade rmi` images you no longer \
         need, then `lade prune`) and try again",
        if *.quota { "disk quota exceeded" } else { "no space left on device" },
        path.display()
    )]
    DiskFull {
        what: String,
        path: PathBuf,
        /// `EDQUOT` rather than `ENOSPC`.
        quota: bool,
    },
    /// The store is locked by another process and the operation asked not to wait.
    #[error("store {} is in use by another lade process; try again when it is done", .0.display())]
    Busy(PathBuf),
}

/// What to do about an [`Error::TooLarge`] input that is legitimate.
fn raise_hint(setting: Option<&str>) -> String {
    match setting {
        Some(s) => format!("set {s} to a higher number of bytes if it is legitimate"),
        None => "raise the limit if it is legitimate".into(),
    }
}

impl Error {
    /// An I/O error while doing `what` on `path`. A store error carried inside the `io::Error`
    /// (from a reader or writer of this crate, e.g. [`Error::TooLarge`] or [`Error::DiskFull`])
    /// is returned as is; `ENOSPC`/`EDQUOT` become [`Error::DiskFull`].
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        let source = match Error::take_embedded(source) {
            Ok(e) => return e,
            Err(s) => s,
        };
        match disk_full_errno(&source) {
            Some(quota) => Error::DiskFull {
                what: what.to_string(),
                path: path.into(),
                quota,
            },
            None => Error::Io {
                what,
                path: path.into(),
                source,
            },
        }
    }

    /// Takes the store error out of an `io::Error` that carries one (see [`Error::into_io`]).
    pub fn take_embedded(e: std::io::Error) -> std::result::Result<Error, std::io::Error> {
        if e.get_ref().is_some_and(|i| i.is::<Error>()) {
            if let Some(inner) = e.into_inner() {
                if let Ok(err) = inner.downcast::<Error>() {
                    return Ok(*err);
                }
            }
            // Unreachable: checked above.
            return Err(std::io::Error::other("store error lost"));
        }
        Err(e)
    }

    /// The error of a failed read of a stream: the store error the `io::Error` carries (too
    /// large, disk full: not the input's fault) as is, else a format error `context: e`.
    pub(crate) fn embedded_or_format(e: std::io::Error, context: impl std::fmt::Display) -> Error {
        match Error::take_embedded(e) {
            Ok(err) => err,
            Err(e) => Error::Format(format!("{context}: {e}")),
        }
    }

    /// The error of a failed read of the tar stream named `what` (see
    /// [`Error::embedded_or_format`]).
    pub(crate) fn bad_tar(what: &str, e: std::io::Error) -> Error {
        Error::embedded_or_format(
            e,
            format_args!("{what} is not a valid tar stream (truncated or corrupt?)"),
        )
    }

    /// Wraps this error in an `io::Error` (to pass it through `Read`/`Write` code such as a tar
    /// parser or a decompressor); [`Error::io`] and [`Error::take_embedded`] take it out again.
    pub fn into_io(self) -> std::io::Error {
        let kind = match &self {
            Error::DiskFull { quota: false, .. } => std::io::ErrorKind::StorageFull,
            Error::DiskFull { quota: true, .. } => std::io::ErrorKind::QuotaExceeded,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, self)
    }

    /// Whether the filesystem was full (or the quota used up): not the input's fault, and
    /// retrying after freeing space can succeed.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::DiskFull { .. })
    }
}

/// `Some(is_quota)` when `e` is `ENOSPC` or `EDQUOT`.
pub fn disk_full_errno(e: &std::io::Error) -> Option<bool> {
    match e.raw_os_error() {
        Some(nix::libc::ENOSPC) => Some(false),
        Some(nix::libc::EDQUOT) => Some(true),
        _ => match e.kind() {
            std::io::ErrorKind::StorageFull => Some(false),
            std::io::ErrorKind::QuotaExceeded => Some(true),
            _ => None,
        },
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds path context to `std::io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::io(what, path, source))
    }
}

/// Adds path context to nix results.
pub(crate) trait SysContext<T> {
    fn sys(self, what: &'static str, path: &str) -> Result<T>;
}

impl<T> SysContext<T> for nix::Result<T> {
    fn sys(self, what: &'static str, path: &str) -> Result<T> {
        self.map_err(|source| match source {
            nix::errno::Errno::ENOSPC | nix::errno::Errno::EDQUOT => Error::DiskFull {
                what: what.to_string(),
                path: path.into(),
                quota: source == nix::errno::Errno::EDQUOT,
            },
            source => Error::Sys {
                what,
                path: path.to_string(),
                source,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_and_edquot_become_disk_full() {
        let e = Error::io(
            "write",
            "/store/tmp/blob-1",
            std::io::Error::from_raw_os_error(nix::libc::ENOSPC),
        );
        assert!(e.is_disk_full(), "{e}");
        let text = e.to_string();
        assert!(text.starts_with("no space left on device: cannot write /store/tmp/blob-1; "));
        assert!(text.contains("lade prune"), "{text}");
        let e = Error::io(
            "write",
            "/x",
            std::io::Error::from_raw_os_error(nix::libc::EDQUOT),
        );
        assert!(e.to_string().starts_with("disk quota exceeded"), "{e}");
        let e: Result<()> = Err(nix::errno::Errno::ENOSPC).sys("create file", "etc/x");
        assert!(e.is_err_and(|e| e.is_disk_full()));
        let e = Error::io(
            "read",
            "/x",
            std::io::Error::from_raw_os_error(nix::libc::EIO),
        );
        assert!(matches!(e, Error::Io { .. }));
    }

    #[test]
    fn a_store_error_passes_through_io_unchanged() {
        let inner = Error::DiskFull {
            what: "write".into(),
            path: "/store/tmp/blob-2".into(),
            quota: false,
        };
        let io = inner.into_io();
        assert_eq!(io.kind(), std::io::ErrorKind::StorageFull);
        let back = Error::io("copy into blob", "/elsewhere", io);
        assert!(
            matches!(&back, Error::DiskFull { path, .. } if path.to_str() == Some("/store/tmp/blob-2")),
            "{back}"
        );
        let too = Error::TooLarge {
            what: "layer".into(),
            limit: 1,
            setting: None,
        };
        assert!(matches!(
            Error::take_embedded(too.into_io()),
            Ok(Error::TooLarge { .. })
        ));
        assert!(Error::take_embedded(std::io::Error::other("plain")).is_err());
    }
}
