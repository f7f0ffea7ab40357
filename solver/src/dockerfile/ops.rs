//! The ops of Dockerfile vertices (what runs on a cache miss) and the store-backed cache.

use std::sync::Arc;

use lade_cache::{CacheRecord, Digest as StoreDigest, Store};
use lade_executor::copy::{run_copy, ContextEntry, CopyItem, CopyOp};
use lade_executor::fetch::{download, Download};

use crate::context::Context;
use crate::digest::Digest;
use crate::schedule::{
    BoxError, BoxFuture, Cache, CacheKey, DigestContext, KeyGuard, Op, RunContext,
};

use super::StepValue;

/// Runs blocking work on tokio's blocking pool and flattens the join error.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BoxError> + Send + 'static,
) -> Result<T, BoxError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(format!("worker task failed: {e}").into()),
    }
}

/// FROM: an image of the store (or scratch). Its result is the image's layers; never cached
/// (it costs nothing) and its key is derived from the image ID alone.
pub(crate) struct SourceOp {
    pub layers: Vec<StoreDigest>,
}

impl Op<StepValue> for SourceOp {
    fn run(&self, _cx: RunContext<StepValue>) -> BoxFuture<'_, Result<StepValue, BoxError>> {
        let v = StepValue {
            layers: Arc::new(self.layers.clone()),
            created: None,
        };
        Box::pin(async move { Ok(v) })
    }
}

/// The part of a `--parents` source pattern that is not recreated: what precedes a `/./`
/// pivot, else nothing (`/`).
pub(crate) fn pivot_of(pattern: &str) -> String {
    let mut q = pattern.trim_start_matches('/');
    while let Some(r) = q.strip_prefix("./") {
        q = r.trim_start_matches('/');
    }
    match q.find("/./") {
        Some(i) => lade_executor::rootfs::clean(&q[..i]),
        None => "/".to_string(),
    }
}

/// `path` (in-root) relative to `prefix` (in-root, cleaned), component-wise.
pub(crate) fn relative_to(path: &str, prefix: &str) -> String {
    if prefix == "/" {
        return path.trim_start_matches('/').to_string();
    }
    match path.strip_prefix(prefix) {
        Some(r) if r.is_empty() || r.starts_with('/') => r.trim_start_matches('/').to_string(),
        _ => path.trim_start_matches('/').to_string(),
    }
}

/// `COPY --link`'s merge: input 0's layers with input 1's (made on an empty filesystem) on top.
pub(crate) struct MergeOp;

impl Op<StepValue> for MergeOp {
    fn run(&self, cx: RunContext<StepValue>) -> BoxFuture<'_, Result<StepValue, BoxError>> {
        let mut it = cx.inputs.into_iter();
        let r = match (it.next(), it.next()) {
            (Some(base), Some(top)) => {
                let mut layers = base.layers.to_vec();
                layers.extend(top.layers.iter().cloned());
                Ok(StepValue {
                    layers: Arc::new(layers),
                    created: top.created.clone(),
                })
            }
            _ => Err("merge needs two inputs".into()),
        };
        Box::pin(async move { r })
    }
}

/// One COPY/ADD source as lowered.
#[derive(Debug, Clone)]
pub(crate) enum SourceSpec {
    /// A pattern in the build context.
    Context(String),
    /// A pattern in input `1 + view` (another stage or an image).
    Layers { view: usize, pattern: String },
    /// Inline content (heredoc).
    Inline {
        name: String,
        data: Vec<u8>,
        mode: u32,
    },
    /// ADD of an http(s) URL, with `--checksum` when given.
    Url {
        url: String,
        checksum: Option<String>,
    },
}

/// COPY, ADD and WORKDIR's mkdir: input 0 is the parent filesystem, inputs 1.. the source views.
pub(crate) struct CopyVertexOp {
    pub store: Arc<Store>,
    pub context: Option<Arc<Context>>,
    pub sources: Vec<SourceSpec>,
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<lade_executor::chmod::Chmod>,
    pub unpack: bool,
    pub mkdir_only: bool,
    /// `--exclude` patterns (paths relative to each copied source).
    pub exclude: Vec<String>,
    /// `--parents`: keep each source's path (after a `/./` pivot) under the destination.
    pub parents: bool,
    /// Downloads made while computing the input digest, reused by the run.
    pub downloads: std::sync::Mutex<Vec<(String, Download, Arc<tempfile::TempDir>)>>,
}

impl CopyVertexOp {
    fn urls(&self) -> Vec<(String, Option<String>)> {
        self.sources
            .iter()
            .filter_map(|s| match s {
                SourceSpec::Url { url, checksum } => Some((url.clone(), checksum.clone())),
                _ => None,
            })
            .collect()
    }

    /// Downloads `url` into the store's temp space (or returns the earlier download).
    async fn fetch(
        &self,
        url: &str,
        checksum: Option<&str>,
    ) -> Result<(Download, Arc<tempfile::TempDir>), BoxError> {
        if let Ok(d) = self.downloads.lock() {
            if let Some((_, dl, dir)) = d.iter().find(|(u, _, _)| u == url) {
                return Ok((dl.clone(), dir.clone()));
            }
        }
        let store = self.store.clone();
        let (u, c) = (url.to_string(), checksum.map(String::from));
        let (dl, dir) = blocking(move || {
            let dir = store.temp_dir("download-")?;
            let dl = download(&u, dir.path(), c.as_deref())?;
            Ok((dl, Arc::new(dir)))
        })
        .await?;
        if let Ok(mut d) = self.downloads.lock() {
            d.push((url.to_string(), dl.clone(), dir.clone()));
        }
        Ok((dl, dir))
    }

    fn context_patterns(&self) -> Vec<String> {
        self.sources
            .iter()
            .filter_map(|s| match s {
                SourceSpec::Context(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }
}

fn no_context() -> BoxError {
    "this build has no context (the Dockerfile came from standard input): COPY/ADD from the \
     context need a CONTEXT directory"
        .into()
}

impl Op<StepValue> for CopyVertexOp {
    fn input_digest(&self, _cx: DigestContext) -> Option<BoxFuture<'_, Result<Digest, BoxError>>> {
        let patterns = self.context_patterns();
        let urls = self.urls();
        if patterns.is_empty() && urls.is_empty() {
            return None;
        }
        let ctx = self.context.clone();
        Some(Box::pin(async move {
            let mut b = crate::digest::DigestBuilder::new("lade dockerfile copy inputs v1");
            if !patterns.is_empty() {
                let ctx = ctx.ok_or_else(no_context)?;
                let sel = ctx.select_blocking(patterns).await?;
                b.digest(&sel.digest);
            }
            for (url, checksum) in urls {
                // with --checksum the content is known without downloading (as BuildKit)
                let d = match checksum {
                    Some(c) => c,
                    None => self.fetch(&url, None).await?.0.digest.to_string(),
                };
                b.str(&url).str(&d);
            }
            Ok(b.finish())
        }))
    }

    fn run(&self, cx: RunContext<StepValue>) -> BoxFuture<'_, Result<StepValue, BoxError>> {
        Box::pin(async move {
            let mut inputs = cx.inputs.into_iter();
            let parent = inputs.next().ok_or("copy step without a parent")?;
            let views: Vec<Vec<StoreDigest>> = inputs.map(|v| v.layers.to_vec()).collect();
            let matcher = if self.exclude.is_empty() {
                None
            } else {
                Some(Arc::new(crate::context::PatternMatcher::new(
                    &self.exclude,
                )?))
            };
            let excluded = |p: &str| {
                matcher
                    .as_ref()
                    .is_some_and(|m| m.matches_or_parent_matches(p))
            };
            let mut items = Vec::new();
            let mut keep = Vec::new();
            for s in &self.sources {
                match s {
                    SourceSpec::Context(p) => {
                        let ctx = self.context.clone().ok_or_else(no_context)?;
                        let sel = ctx.clone().select_blocking(vec![p.clone()]).await?;
                        for src in sel.sources {
                            let base = src
                                .path
                                .file_name()
                                .map(|b| b.to_string_lossy().into_owned())
                                .unwrap_or_default();
                            if !base.is_empty() && excluded(&base) {
                                continue;
                            }
                            items.push(CopyItem::Context {
                                root: ctx.root().to_path_buf(),
                                matched: src.path.clone(),
                                entries: src
                                    .entries
                                    .iter()
                                    .filter(|e| {
                                        e.rel.as_os_str().is_empty()
                                            || !excluded(&e.rel.to_string_lossy())
                                    })
                                    .map(|e| ContextEntry {
                                        rel: e.rel.clone(),
                                        path: e.entry.path.clone(),
                                    })
                                    .collect(),
                                keep: self.parents.then(|| {
                                    let m = format!("/{}", src.path.display());
                                    std::path::PathBuf::from(relative_to(&m, &pivot_of(p)))
                                }),
                            });
                        }
                    }
                    SourceSpec::Layers { view, pattern } => items.push(CopyItem::Layers {
                        view: *view,
                        pattern: pattern.clone(),
                        pivot: self.parents.then(|| pivot_of(pattern)),
                    }),
                    SourceSpec::Url { url, checksum } => {
                        let (dl, dir) = self.fetch(url, checksum.as_deref()).await?;
                        keep.push(dir);
                        items.push(CopyItem::File {
                            name: dl.name,
                            data: lade_executor::copy::FileData::Path(dl.path),
                            mode: 0o600,
                            mtime: dl.mtime,
                        });
                    }
                    SourceSpec::Inline { name, data, mode } => items.push(CopyItem::File {
                        name: name.clone(),
                        data: lade_executor::copy::FileData::Bytes(data.clone()),
                        mode: *mode,
                        mtime: None,
                    }),
                }
            }
            let op = CopyOp {
                items,
                dest: self.dest.clone(),
                chown: self.chown.clone(),
                chmod: self.chmod.clone(),
                unpack: self.unpack,
                sources: views,
                mkdir_only: self.mkdir_only,
                exclude: matcher.clone().map(|m| {
                    lade_executor::copy::Exclude(Arc::new(move |p: &str| {
                        m.matches_or_parent_matches(p)
                    }))
                }),
            };
            let store = self.store.clone();
            let base = parent.layers.to_vec();
            let rec = blocking(move || Ok(run_copy(&store, &base, &op)?)).await?;
            drop(keep);
            if let Ok(mut d) = self.downloads.lock() {
                d.clear();
            }
            Ok(parent.with_new_layer(rec.diff_id))
        })
    }
}

/// The build cache in the store: one record per key (see `lade_cache::buildcache`).
pub struct StoreCache {
    pub store: Arc<Store>,
}

impl Cache<StepValue> for StoreCache {
    fn lookup<'a>(
        &'a self,
        key: &'a CacheKey,
    ) -> BoxFuture<'a, Result<Option<StepValue>, BoxError>> {
        let store = self.store.clone();
        let hex = key.0.to_hex();
        Box::pin(blocking(move || {
            let Some(rec) = store.cache_lookup(&hex)? else {
                return Ok(None);
            };
            // the layer this step made must still be there (a pruned store misses)
            if let Some(top) = rec.layers.last() {
                if !store.has_snapshot(top) && store.layer(top)?.is_none() {
                    return Ok(None);
                }
            }
            Ok(Some(StepValue {
                layers: Arc::new(rec.layers),
                created: rec
                    .data
                    .get("created")
                    .and_then(|c| c.as_str())
                    .map(String::from),
            }))
        }))
    }

    fn record<'a>(
        &'a self,
        key: &'a CacheKey,
        value: &'a StepValue,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        let store = self.store.clone();
        let hex = key.0.to_hex();
        let rec = CacheRecord {
            layers: value.layers.to_vec(),
            data: serde_json::json!({ "created": value.created }),
        };
        Box::pin(blocking(move || Ok(store.cache_record(&hex, &rec)?)))
    }

    fn lock<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<KeyGuard, BoxError>> {
        let store = self.store.clone();
        let hex = key.0.to_hex();
        Box::pin(blocking(move || Ok(KeyGuard::new(store.cache_lock(&hex)?))))
    }
}
