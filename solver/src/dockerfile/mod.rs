//! Dockerfile lowering: a parsed [`lade_parser::Dockerfile`] becomes a build [`crate::Graph`] of vertices (image
//! sources, COPY/ADD/WORKDIR file ops, RUN execs) plus the image config the build produces.
//!
//! This is BuildKit's `dockerfile2llb`: stages by name and index, global ARGs before the first
//! FROM (with the platform ARGs) usable in FROM lines, ARG scoping per stage, `--build-arg`
//! overrides, proxy ARGs passed to RUN without entering cache keys or history, ENV/ARG
//! expansion with the parser's shell lexer for the instructions BuildKit expands, ONBUILD
//! triggers of the base run right after FROM, `--target`, and only the stages the target needs
//! get vertices. Config-only instructions change the config at lowering time and feed the
//! definitions of later vertices, exactly as BuildKit's state does.
//!
//! Definition digests hold the fully expanded op (command, env, user, workdir, shell result,
//! network, platform, destination, flags, inline content); content comes in as input keys (the
//! parent filesystem, source stages) and input digests (the build-context selection). The
//! scheduler stays generic: it only sees vertices, digests and ops.

pub mod change;
pub mod image;
mod lower;
mod ops;
mod run;

use std::sync::Arc;

pub use lower::{lower, BuildOptions, ImageResolver, Lowered, StepInfo};
pub use ops::StoreCache;
pub use run::RunNetwork;

/// The result of one Dockerfile vertex: the filesystem (layer stack) after it.
#[derive(Debug, Clone)]
pub struct StepValue {
    /// diffIDs, bottom first.
    pub layers: Arc<Vec<lade_cache::Digest>>,
    /// When the step's layer was made (RFC 3339), for the image history; `None` for sources.
    pub created: Option<String>,
}

impl StepValue {
    /// This filesystem with `diff_id` on top, a layer made now.
    pub(crate) fn with_new_layer(&self, diff_id: lade_cache::Digest) -> StepValue {
        let mut layers = self.layers.to_vec();
        layers.push(diff_id);
        StepValue {
            layers: Arc::new(layers),
            created: Some(image::now_rfc3339()),
        }
    }
}

/// A problem with the Dockerfile found while lowering, at a place in the source text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct LowerError {
    pub message: String,
    /// Byte span in the Dockerfile (for `Dockerfile:LINE:COL` rendering).
    pub span: Option<lade_parser::Span>,
}

impl LowerError {
    pub fn new(message: impl Into<String>, span: Option<lade_parser::Span>) -> Self {
        LowerError {
            message: message.into(),
            span,
        }
    }
}
