//! Build solver.
//!
//! Owns the generic build graph and its parallel, cache-aware scheduler ([`graph`],
//! [`schedule`]), the cache-key encoding ([`CacheKey`]) and build-context hashing with
//! `.dockerignore` semantics and a persistent stat cache ([`context`]), and Dockerfile lowering
//! ([`dockerfile`]: AST to graph and image config, with the store-backed [`Cache`]) beside them;
//! the scheduler stays free of Dockerfile knowledge (it sees vertices, digests and ops, never
//! instructions). The crate never prints:
//! progress goes out as [`Event`]s, failures as [`Error`]s.

pub mod context;
pub mod digest;
pub mod dockerfile;
pub mod graph;
pub mod schedule;

pub use digest::{Digest, DigestBuilder};
pub use graph::{Graph, Vertex, VertexId};
pub use schedule::{
    BoxError, BoxFuture, Cache, CacheKey, CancellationToken, DigestContext, Event, EventKind,
    KeyGuard, LogSink, NoCache, Op, RunContext, Solution, Solved, Solver, Stream,
};

/// Where in a vertex's life a failure happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Computing the input-content digest (e.g. hashing the COPY sources).
    InputDigest,
    CacheLookup,
    CacheLock,
    /// Running the op.
    Execute,
    CacheRecord,
}

impl Phase {
    fn prefix(self) -> &'static str {
        match self {
            Phase::InputDigest => "failed to compute cache key: ",
            Phase::CacheLookup => "cache lookup failed: ",
            Phase::CacheLock => "could not lock cache key: ",
            Phase::Execute => "",
            Phase::CacheRecord => "could not record result in cache: ",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A vertex failed; `name` is its display name (e.g. `[build 3/5] RUN make`), `source` the
    /// op's or cache's own error (downcast it for details such as an exit code).
    #[error("{name}: {}{source}", phase.prefix())]
    VertexFailed {
        vertex: VertexId,
        name: String,
        phase: Phase,
        #[source]
        source: BoxError,
    },
    /// The graph has a cycle; `names` lists one, each vertex an input of the next, the first
    /// repeated at the end.
    #[error("build graph has a dependency cycle: {}", names.join(" -> "))]
    Cycle { names: Vec<String> },
    #[error("vertex {vertex} is not part of this build graph")]
    UnknownVertex { vertex: VertexId },
    #[error("build cancelled")]
    Cancelled,
    #[error(transparent)]
    Context(#[from] context::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
