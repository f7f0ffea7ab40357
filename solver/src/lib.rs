//! Build solver.
//!
//! Will own lowering a parsed Dockerfile into a petgraph DAG of vertices (image source, exec,
//! file op, config change), computing a content-addressed cache key per vertex and walking the
//! graph in parallel, reusing cache hits and handing misses to the executor. The scheduler part
//! must stay free of Dockerfile knowledge; it must not print (the CLI renders progress).
