//! RUN vertices: the op that runs a command in the sandbox on top of the parent's layers.

use std::sync::Arc;

use lade_cache::Store;

use lade_executor::run::{run, LogFn, RunSpec};

use crate::schedule::{BoxError, BoxFuture, Op, RunContext, Stream};

use super::image::now_rfc3339;

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
    fn run(&self, cx: RunContext<StepValue>) -> BoxFuture<'_, Result<StepValue, BoxError>> {
        Box::pin(async move {
            let parent = cx
                .inputs
                .into_iter()
                .next()
                .ok_or("RUN step without a parent")?;
            let spec = RunSpec {
                args: self.args.clone(),
                env: self.env.clone(),
                cwd: self.cwd.clone(),
                user: self.user.clone(),
                host_network: self.network == RunNetwork::Host,
                files: self.files.clone(),
            };
            let sink = cx.log.clone();
            let log: LogFn = Arc::new(move |stderr, data| {
                sink.write(
                    if stderr {
                        Stream::Stderr
                    } else {
                        Stream::Stdout
                    },
                    data,
                )
            });
            let rec = run(
                self.store.clone(),
                parent.layers.to_vec(),
                spec,
                log,
                cx.cancel,
            )
            .await?;
            let mut layers = parent.layers.to_vec();
            layers.push(rec.diff_id);
            Ok(StepValue {
                layers: Arc::new(layers),
                created: Some(now_rfc3339()),
            })
        })
    }
}
