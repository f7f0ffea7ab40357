//! Registry client: the OCI distribution / Docker registry v2 protocol.
//!
//! Owns references (docker's normalisation), authentication (anonymous, basic, bearer tokens
//! cached per scope; credentials from `lade login` and docker's config and helpers), TLS and
//! plain-HTTP endpoints, pulling manifests and blobs with digest verification, resumable
//! streaming downloads, pushing with existence checks, cross-repository mounts and chunked
//! uploads, and retries with backoff. It must not print (progress goes through
//! [`ProgressFn`]) and must not know the store: downloads go into a caller's [`BlobSink`] and
//! uploads come from a caller's [`BlobSource`]; the caller commits what this crate verified.
//!
//! ```no_run
//! # async fn demo() -> lade_registry::Result<()> {
//! use lade_registry::{Client, ClientConfig, Platform, ProgressFn, Reference};
//! let client = Client::new(ClientConfig::from_env()?);
//! let r = Reference::parse("localhost:5000/app:1")?;
//! let image = client.resolve_image(&r, &Platform::default()).await?;
//! let config = client.fetch_blob_bytes(&r, &image.image.config, lade_registry::MAX_CONFIG_SIZE).await?;
//! let layers = image.image.layers.iter().map(|d| (d.clone(), Vec::new())).collect();
//! let layers = client.fetch_blobs(&r, layers, &ProgressFn::none()).await?;
//! # let _ = (config, layers); Ok(()) }
//! ```

pub mod auth;
mod client;
pub mod credentials;
mod error;
pub mod hub;
mod images;
pub mod manifest;
mod progress;
mod pull;
mod push;
#[cfg(feature = "test-support")]
pub mod testing;

pub use client::{
    is_loopback, parse_byte_size, Client, ClientConfig, RetryPolicy, MIN_UPLOAD_CHUNK,
};
pub use credentials::{Credential, CredentialStore};
pub use error::{Error, Result};
pub use hub::api_host;
pub use images::{
    ensure_image, pull_image, push_image, EnsuredImage, PullPolicy, PulledImage, PushOptions,
    PushedImage,
};
/// References and digests are the store's types (one parser, one digest for the whole tool).
pub use lade_cache::{normalize_registry, Digest, Hasher, Reference};
pub use manifest::{
    Descriptor, ImageIndex, ImageManifest, Manifest, ManifestKind, Platform, MAX_CONFIG_SIZE,
    MAX_MANIFEST_SIZE,
};
pub use progress::{BlobSink, BlobSource, Progress, ProgressFn};
pub use pull::{FetchedManifest, ResolvedImage};
pub use push::PushedBlob;
