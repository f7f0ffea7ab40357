//! Sandbox runtime: runs one process in fresh Linux namespaces (mount, pid, uts, ipc, network,
//! and user when not root) on an overlayfs rootfs whose lowerdirs are image snapshots and whose
//! upperdir collects the changes, with docker's mounts, devices, masked paths, user resolution,
//! capabilities and rlimits.
//!
//! It owns: the sandbox spec ([`SandboxSpec`]), the init entry point that the `lade` binary
//! re-executes ([`maybe_run_init`]), starting, signalling and waiting for sandboxes
//! ([`Runtime`], [`Sandbox`]), and the container state directories `lade run`/`ps`/`rm`/
//! `commit` list and remove ([`containers`]).
//!
//! It must not: depend on another lade crate, write layer tars or snapshots (the upperdir it
//! returns is turned into a layer by the `cache` crate), write anything into the lowerdirs,
//! leave a mount on the host (every mount lives in the sandbox's own mount namespace), let any
//! fd of the caller into the sandbox, or run any binary or library of the image in the host
//! context (users and groups are read from the image's files, never through NSS).
//!
//! The kernel-facing code sits behind the [`sys::Syscall`] seam; the decisions (what to mount,
//! in which order, what to refuse) are in [`plan`] and [`setup`] and unit-tested with a
//! recording double.

pub mod caps;
pub mod containers;
mod error;
mod init;
pub mod plan;
mod proto;
pub mod pty;
// The store's tree removal, one source for both crates (see its module doc).
#[path = "../../cache/src/rmtree.rs"]
mod rmtree;
mod sandbox;
pub mod setup;
pub mod spec;
pub mod sys;
pub mod user;

pub use error::{Error, Result, StartErrorKind};
pub use init::{maybe_run_init, INIT_ARG};
pub use sandbox::{
    remove_tree, ExitStatus, Finished, Runtime, Sandbox, Signaller, Stdio, StdioSet,
};
pub use spec::{
    docker_env, replace_or_append_env, BindMount, ConsoleSize, EtcFiles, NetworkMode, ProcessSpec,
    Rlimit, Rootfs, SandboxSpec, UserNamespace,
};
