//! Content-addressed store.
//!
//! Owns everything Lade keeps on disk: blobs by OCI digest, unpacked layer snapshots,
//! image metadata and names, the build-cache key index, locks and garbage collection. Writes are
//! atomic (temp file, fsync, verify, rename) so nothing half-written is ever visible. It depends
//! on no other Lade crate and must not start processes or talk to the network.
#![deny(unsafe_code)]

pub mod digest;
pub mod error;
pub mod extract;
pub mod gzip;
pub mod reference;
pub mod tarfmt;

pub use digest::{Digest, Hasher, HashingReader, HashingWriter};
pub use error::{Error, Result};
pub use reference::{normalize_registry, Reference};
pub mod archive;
pub mod buildcache;
pub mod gc;
pub mod images;
pub mod layers;
pub mod lock;
pub mod remotes;
mod rmtree;
pub mod store;

pub use buildcache::{BuildCacheRoots, CacheRecord};
pub use gc::{disk_usage, CheckReport, GcRoots, Marks, PruneReport};
pub use images::{Image, ImageSummary, RefIndex};
pub use layers::{lowerdir_option, LayerBlob, LayerRecord, StagedLayer};
pub use remotes::{BlobSighting, RemoteBlob};
pub use store::{
    default_root, default_root_for, BlobWriter, StagedBlob, Store, StoreOptions,
    MAX_LAYER_BYTES_ENV,
};
pub use tarfmt::{Compression, Mtime, TarOptions};
