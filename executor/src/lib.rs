//! Vertex executor.
//!
//! Will own running one build vertex: RUN steps in the `runtime` sandbox, COPY/ADD file
//! operations, and image sources, producing snapshots and layers in the `cache` store. It must
//! not decide what to run or in which order (that is the solver's job).
