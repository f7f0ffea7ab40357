//! RUN vertices: the op that runs a command in the sandbox on top of the parent's layers.

use std::sync::Arc;

use lade_cache::Store;

use lade_executor::run::{run, HostMount, LogFn, RunSpec};

use crate::schedule::{BoxError, BoxFuture, Op, RunContext, Stream};

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

/// A `RUN --mount` lade supports.
#[derive(Debug, Clone)]
pub(crate) enum RunMountSpec {
    /// A persistent directory in the store (`cachemounts/`), shared by builds using the same id.
    Cache {
        id: String,
        target: String,
        mode: u32,
        uid: u32,
        gid: u32,
        locked: bool,
    },
    /// An empty scratch directory, discarded after the step.
    Tmpfs { target: String },
    /// A path of the build context (read-only, or writable with the writes discarded); its
    /// content is part of the step's key.
    Context {
        source: String,
        target: String,
        readonly: bool,
    },
    /// A path of another stage or an image (input `1 + view` of the RUN vertex).
    Layers {
        view: usize,
        source: String,
        target: String,
        readonly: bool,
    },
    /// A secret file (`--secret`), read-only; its content is in no key and no layer.
    Secret {
        id: String,
        target: String,
        mode: u32,
        uid: u32,
        gid: u32,
        /// `None`: not given and not required, so not mounted.
        content: Option<Arc<Vec<u8>>>,
    },
}

impl RunMountSpec {
    pub(crate) fn digest_into(&self, b: &mut crate::digest::DigestBuilder) {
        match self {
            RunMountSpec::Cache {
                id,
                target,
                mode,
                uid,
                gid,
                locked,
            } => {
                b.u8(1).str(id).str(target).u64(u64::from(*mode));
                b.u64(u64::from(*uid))
                    .u64(u64::from(*gid))
                    .u8(u8::from(*locked));
            }
            RunMountSpec::Tmpfs { target } => {
                b.u8(2).str(target);
            }
            RunMountSpec::Context {
                source,
                target,
                readonly,
            } => {
                b.u8(3).str(source).str(target).u8(u8::from(*readonly));
            }
            RunMountSpec::Layers {
                view,
                source,
                target,
                readonly,
            } => {
                b.u8(5).u64(*view as u64).str(source).str(target);
                b.u8(u8::from(*readonly));
            }
            RunMountSpec::Secret {
                id,
                target,
                mode,
                uid,
                gid,
                ..
            } => {
                b.u8(4).str(id).str(target).u64(u64::from(*mode));
                b.u64(u64::from(*uid)).u64(u64::from(*gid));
            }
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
    pub mounts: Vec<RunMountSpec>,
    pub context: Option<Arc<crate::context::Context>>,
}

impl RunVertexOp {
    fn context_sources(&self) -> Vec<String> {
        self.mounts
            .iter()
            .filter_map(|m| match m {
                RunMountSpec::Context { source, .. } => Some(source.clone()),
                _ => None,
            })
            .collect()
    }

    /// Host directories for the mounts (created as needed) and the locks held while running.
    fn host_mounts(
        &self,
        views: &[Vec<lade_cache::Digest>],
    ) -> Result<(Vec<HostMount>, Vec<lade_cache::lock::LockGuard>), BoxError> {
        let mut out = Vec::new();
        let mut locks = Vec::new();
        for m in &self.mounts {
            match m {
                RunMountSpec::Cache {
                    id,
                    target,
                    mode,
                    uid,
                    gid,
                    locked,
                } => {
                    let key = crate::digest::Digest::of(id.as_bytes()).to_hex();
                    let mounts_dir = self.store.root().join("cachemounts");
                    let dir = mounts_dir.join(&key);
                    if !dir.is_dir() {
                        std::fs::create_dir_all(&dir)?;
                        set_mode_and_owner(&dir, *mode, *uid, *gid)?;
                    }
                    if *locked {
                        locks.push(lade_cache::lock::lock(
                            &mounts_dir.join(format!("{key}.lock")),
                            lade_cache::lock::LockKind::Exclusive,
                            true,
                            self.store.root(),
                        )?);
                    }
                    out.push(HostMount {
                        source: dir,
                        destination: target.clone(),
                        readonly: false,
                        temp: false,
                        view: None,
                    });
                }
                RunMountSpec::Tmpfs { target } => {
                    let dir = self.store.temp_dir("tmpfs-")?.keep();
                    out.push(HostMount {
                        source: dir,
                        destination: target.clone(),
                        readonly: false,
                        temp: true,
                        view: None,
                    });
                }
                RunMountSpec::Secret {
                    target,
                    mode,
                    uid,
                    gid,
                    content,
                    ..
                } => {
                    let Some(content) = content else { continue };
                    let dir = self.store.temp_dir("secret-")?.keep();
                    let file = dir.join("secret");
                    std::fs::write(&file, content.as_slice())?;
                    set_mode_and_owner(&file, *mode, *uid, *gid)?;
                    out.push(HostMount {
                        source: file,
                        destination: target.clone(),
                        readonly: true,
                        temp: true,
                        view: None,
                    });
                }
                RunMountSpec::Context {
                    source,
                    target,
                    readonly,
                } => {
                    let ctx = self.context.as_ref().ok_or("no build context")?;
                    let sel = ctx.select(&[source.as_str()])?;
                    let resolved = sel
                        .sources
                        .first()
                        .map(|s| s.resolved.clone())
                        .ok_or("bind source not found in the build context")?;
                    let path = ctx.root().join(resolved);
                    // writable: an overlay of the context dir with a throwaway upperdir
                    let view = (!*readonly && path.is_dir()).then(|| (Vec::new(), "/".to_string()));
                    if !*readonly && view.is_none() {
                        return Err(
                            "a writable bind of a context file is not supported by lade".into()
                        );
                    }
                    out.push(HostMount {
                        source: path,
                        destination: target.clone(),
                        readonly: *readonly,
                        temp: false,
                        view,
                    });
                }
                RunMountSpec::Layers {
                    view,
                    source,
                    target,
                    readonly,
                } => {
                    let layers = views.get(*view).ok_or("bind source stage missing")?;
                    let dirs = self.store.ensure_snapshots(layers)?;
                    out.push(HostMount {
                        source: std::path::PathBuf::new(),
                        destination: target.clone(),
                        readonly: *readonly,
                        temp: false,
                        view: Some((dirs, source.clone())),
                    });
                }
            }
        }
        Ok((out, locks))
    }
}

impl Op<StepValue> for RunVertexOp {
    fn input_digest(
        &self,
        _cx: crate::schedule::DigestContext,
    ) -> Option<BoxFuture<'_, Result<crate::Digest, BoxError>>> {
        let sources = self.context_sources();
        if sources.is_empty() {
            return None;
        }
        let ctx = self.context.clone();
        Some(Box::pin(async move {
            let ctx = ctx.ok_or("RUN --mount=type=bind needs a build context")?;
            Ok(ctx.select_blocking(sources).await?.digest)
        }))
    }

    fn run(&self, cx: RunContext<StepValue>) -> BoxFuture<'_, Result<StepValue, BoxError>> {
        Box::pin(async move {
            let mut inputs = cx.inputs.into_iter();
            let parent = inputs.next().ok_or("RUN step without a parent")?;
            let views: Vec<Vec<lade_cache::Digest>> = inputs.map(|v| v.layers.to_vec()).collect();
            let (mounts, locks) = self.host_mounts(&views)?;
            let spec = RunSpec {
                mounts: mounts.clone(),
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
            .await;
            drop(locks);
            for m in mounts.iter().filter(|m| m.temp) {
                let p = if m.source.is_file() {
                    m.source.parent().map(std::path::Path::to_path_buf)
                } else {
                    Some(m.source.clone())
                };
                if let Some(p) = p {
                    let _ = lade_runtime_remove(&p);
                }
            }
            let rec = rec?;
            Ok(parent.with_new_layer(rec.diff_id))
        })
    }
}

/// Gives a mount source the mode and owner its `--mount` option asks for.
fn set_mode_and_owner(
    path: &std::path::Path,
    mode: u32,
    uid: u32,
    gid: u32,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
}

fn lade_runtime_remove(p: &std::path::Path) -> std::io::Result<()> {
    std::fs::remove_dir_all(p)
}
