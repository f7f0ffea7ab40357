//! RUN vertices: the op that runs a command in the sandbox on top of the parent's layers.

use std::sync::Arc;

use lade_cache::Store;

use crate::schedule::{BoxError, BoxFuture, Op, RunContext};

use super::StepValue;

/// The network a RUN step gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RunNetwork {
    /// The host's network namespace (docker build's default, so package managers work).
    #[default]
    Host,
    /// A fresh namespace with only `lo`.
    None,
}

impl RunNetwork {
    pub fn as_str(self) -> &'static str {
        match self {
            RunNetwork::Host => "host",
            RunNetwork::None => "none",
        }
    }
}

/// RUN: input 0 is the parent filesystem.
pub(crate) struct RunVertexOp {
    pub store: Arc<Store>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub network: RunNetwork,
    /// Heredoc scripts with a shebang, mounted at `/dev/pipes/NAME`.
    pub files: Vec<(String, Vec<u8>)>,
}

impl Op<StepValue> for RunVertexOp {
    fn run(&self, _cx: RunContext<StepValue>) -> BoxFuture<'_, Result<StepValue, BoxError>> {
        let _ = (
            &self.store,
            &self.args,
            &self.env,
            &self.cwd,
            &self.user,
            &self.files,
        );
        Box::pin(async move {
            Err("RUN needs the sandbox runtime, which this lade build does not have yet".into())
        })
    }
}
