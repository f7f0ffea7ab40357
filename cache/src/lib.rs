//! Content-addressed store.
//!
//! Will own everything Lade keeps on disk: blobs by OCI digest, unpacked layer snapshots,
//! image metadata and names, the build-cache key index, locks and garbage collection. Writes are
//! atomic (temp file, fsync, verify, rename) so nothing half-written is ever visible. It depends
//! on no other Lade crate and must not start processes or talk to the network.
