//! The crate's error type. Messages name the registry, reference or digest concerned and say
//! what to do next when that is known. No message ever contains a password or token.

use std::path::PathBuf;

use lade_cache::Digest;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    /// A store error (also invalid references and digests: the parsers are the store's).
    #[error(transparent)]
    Store(#[from] lade_cache::Error),

    #[error(
        "invalid platform {platform:?}: use os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8"
    )]
    InvalidPlatform { platform: String },

    #[error("authentication required for {registry}: run `lade login {registry}`")]
    AuthRequired { registry: String },

    #[error("authentication failed for {registry}: {detail}; check the credentials or run `lade login {registry}`")]
    AuthFailed { registry: String, detail: String },

    #[error("access denied on {registry} ({operation}): {detail}; check that the repository name is right and that your account may access it (`lade login {registry}`)")]
    Denied {
        registry: String,
        operation: String,
        detail: String,
    },

    #[error("manifest for {reference} not found: the registry has no such tag or digest")]
    ManifestNotFound { reference: String },

    #[error("blob {digest} not found in {repository} on {registry}")]
    BlobNotFound {
        registry: String,
        repository: String,
        digest: Digest,
    },

    #[error("{what}: digest mismatch: expected {expected}, got {actual}; the registry served corrupt or different content")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },

    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },

    #[error("{what} is larger than the {limit}-byte limit")]
    TooLarge { what: String, limit: u64 },

    #[error("invalid manifest {what}: {reason}")]
    InvalidManifest { what: String, reason: String },

    #[error("{reference} has no image for {platform}; available: {available}")]
    PlatformNotFound {
        reference: String,
        platform: String,
        available: String,
    },

    /// An error response from the registry that none of the variants above describes.
    #[error("registry {registry} answered {status} to {operation}: {message}")]
    Registry {
        registry: String,
        operation: String,
        status: u16,
        message: String,
    },

    #[error("registry {registry} sent an invalid response to {operation}: {reason}")]
    Protocol {
        registry: String,
        operation: String,
        reason: String,
    },

    #[error("cannot reach {registry} ({operation}): {detail}")]
    Transport {
        registry: String,
        operation: String,
        detail: String,
    },

    #[error("{operation} on {registry} failed after {attempts} attempts: {last}")]
    RetriesExhausted {
        registry: String,
        operation: String,
        attempts: u32,
        last: String,
    },

    #[error("TLS setup for {registry}: {detail}")]
    Tls { registry: String, detail: String },

    #[error("credential helper docker-credential-{helper}: {detail}")]
    CredentialHelper { helper: String, detail: String },

    #[error("invalid {name}: {reason}")]
    InvalidSetting { name: String, reason: String },

    #[error("config file {}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether a filesystem (the store's) was full or a disk quota used up.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Store(e) if e.is_disk_full())
    }

    /// Whether the registry (or a proxy in front of it) refused a request body as too large
    /// (`413 Request Entity Too Large`).
    pub fn is_too_large(&self) -> bool {
        matches!(self, Error::Registry { status: 413, .. })
    }

    /// Whether another attempt may succeed (connection trouble, 429, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Registry { status, .. } => *status == 429 || (500..600).contains(status),
            _ => false,
        }
    }
}
