//! Sandbox runtime.
//!
//! Will own starting a process in fresh Linux namespaces on an overlayfs rootfs (lowerdirs are
//! snapshots, upperdir is fresh), with docker-compatible mounts, user, capabilities and rlimits,
//! and turning the upperdir into a layer. It depends on no other Lade crate and never runs a
//! binary from an image rootfs in the host context.
