//! Images between registries and the store: [`pull_image`], [`push_image`] and
//! [`ensure_image`] (what a build's `FROM` calls).
//!
//! Pull: the manifest is resolved (an index to the requested platform; a single manifest's
//! config must be for that platform), the config fetched unless the store has it, and every
//! layer whose diffID the store lacks is streamed, a few at a time, into the store's staging
//! API on a thread of its own: the compressed bytes are written to a temp file as they arrive
//! while the same pass decompresses them, validates every tar entry and computes the diffID.
//! A layer becomes visible only after its blob digest and size match the manifest *and* its
//! diffID matches the config's `rootfs.diff_ids`; its compressed blob is recorded for the layer,
//! so pushing it back costs nothing. The config, the manifests and finally the names (`name:tag`
//! and `name@digest`, docker's RepoDigest) are written last: nothing is named until everything
//! is stored. A failed pull leaves only verified layers (reused by the next attempt) or temp
//! files (removed on drop).
//!
//! Push: each layer is sent as the store's blob of the requested compression; a layer without
//! one is compressed once (layers in parallel, each gzip layer's chunks on every core, hashing in
//! the same pass), the new blob recorded
//! by the store while the same bytes stream to the registry. A stored blob is first checked with
//! `HEAD` and, when the store remembers it in another repository of the same registry
//! (`remotes.json`), mounted from there instead of uploaded. Then the
//! config and the manifest: Docker v2 schema 2 for gzip (what `docker push` and BuildKit write
//! by default, accepted by every registry), OCI for zstd (docker's schema has no zstd type).
//!
//! Both run the store's blocking work on scoped threads while the transfers run on the tokio
//! runtime: call them from a multi-threaded runtime.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use lade_cache::images::parse_config;
use lade_cache::{
    BlobSighting, Compression, Digest, Image, LayerBlob, LayerRecord, RefIndex, Reference, Store,
};
use tokio::io::AsyncWrite;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::PollSender;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::manifest::{
    Descriptor, Manifest, Platform, DOCKER_CONFIG, DOCKER_MANIFEST_V2, MAX_CONFIG_SIZE, OCI_CONFIG,
    OCI_MANIFEST,
};
use crate::progress::{BlobSink, BlobSource, Progress, ProgressFn};
use crate::push::PushedBlob;

/// Chunks in flight between a download and the thread staging it. A chunk is what hyper read
/// (up to a few hundred kB), so this bounds the memory of one download to a few MB.
const CHANNEL_DEPTH: usize = 8;

/// What [`pull_image`] did.
#[derive(Debug, Clone)]
pub struct PulledImage {
    pub image: Image,
    /// Digest of the manifest the reference names (the index when it names an index): the
    /// image's RepoDigest, recorded as `name@digest`.
    pub repo_digest: Digest,
    /// Digest of the platform's image manifest.
    pub manifest_digest: Digest,
    /// Layers downloaded; the others were in the store already.
    pub layers_downloaded: usize,
    /// Compressed bytes downloaded (layers and config).
    pub bytes_downloaded: u64,
    /// The reference pointed at this image before the pull (docker's "Image is up to date").
    pub up_to_date: bool,
}

/// How [`ensure_image`] decides to contact the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Use the store's image when it is there (complete, for the platform): no network at all.
    /// Pull only what is missing.
    #[default]
    Missing,
    /// Re-resolve the tag (`--pull`): one `HEAD` of the manifest; pull only when the tag now
    /// names another manifest than the store's `name@digest`. A digest reference never moves,
    /// so a local one is used without asking.
    Always,
}

/// An image [`ensure_image`] made available.
#[derive(Debug, Clone)]
pub struct EnsuredImage {
    pub image: Image,
    /// The manifest digest the reference resolved to, when known (`name@digest` recorded by a
    /// pull or push, or the pinned digest): a stable input for build cache keys.
    pub repo_digest: Option<Digest>,
    /// What the pull did, when one was needed.
    pub pulled: Option<PulledImage>,
}

/// Options of [`push_image`].
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Compression of the pushed layers (gzip by default; none is allowed but unusual).
    pub compression: Compression,
}

impl Default for PushOptions {
    fn default() -> PushOptions {
        PushOptions {
            compression: Compression::Gzip,
        }
    }
}

/// What [`push_image`] did.
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// Where it was pushed.
    pub reference: Reference,
    /// Digest of the manifest (recorded as `name@digest`).
    pub digest: Digest,
    /// Size of the manifest in bytes (what `docker push` prints).
    pub size: u64,
    pub media_type: &'static str,
    /// Per layer (bottom first) then the config: exists, mounted or uploaded.
    pub blobs: Vec<PushedBlob>,
    /// Layers compressed for this push (0 when the store had them all).
    pub layers_compressed: usize,
}

/// Pulls `reference` for `platform` into `store` and names it (see the module docs).
pub async fn pull_image(
    client: &Client,
    store: &Store,
    reference: &Reference,
    platform: &Platform,
    progress: &ProgressFn,
) -> Result<PulledImage> {
    let resolved = client.resolve_image(reference, platform).await?;
    let repo_digest = match &resolved.index {
        Some(i) => i.digest.clone(),
        None => resolved.manifest.digest.clone(),
    };
    let manifest = &resolved.image;
    let what = format!("{}@{}", reference.name(), resolved.manifest.digest);

    // The config: from the store when it has it (content-addressed, verified when written).
    let mut bytes_downloaded = 0;
    let config_bytes = if store.has_blob(&manifest.config.digest) {
        store.read_blob(&manifest.config.digest, MAX_CONFIG_SIZE)?
    } else {
        let b = client
            .fetch_blob_bytes(reference, &manifest.config, MAX_CONFIG_SIZE)
            .await?;
        bytes_downloaded += b.len() as u64;
        b
    };
    let (config, diff_ids) = parse_config(&config_bytes, &format!("image config of {what}"))?;
    if resolved.index.is_none() {
        let got = Platform {
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
            variant: config.variant().clone(),
            os_version: None,
        };
        if !platform.matches(&got) {
            return Err(Error::PlatformNotFound {
                reference: reference.to_string(),
                platform: platform.to_string(),
                available: format!("{got} (a single-platform image; pass --platform {got})"),
            });
        }
    }
    if diff_ids.len() != manifest.layers.len() {
        return Err(Error::InvalidManifest {
            what,
            reason: format!(
                "the manifest lists {} layers but its config's rootfs.diff_ids has {}",
                manifest.layers.len(),
                diff_ids.len()
            ),
        });
    }

    // Layers: only those whose diffID the store lacks, each once.
    let mut todo: Vec<(Descriptor, Digest)> = Vec::new();
    for (desc, diff_id) in manifest.layers.iter().zip(&diff_ids) {
        if Compression::from_media_type(&desc.media_type).is_none() {
            return Err(Error::InvalidManifest {
                what: what.clone(),
                reason: format!(
                    "layer {} has media type {:?}, which is not a layer type Lade can unpack",
                    desc.digest, desc.media_type
                ),
            });
        }
        if store.require_layer(diff_id).is_ok() {
            progress.emit(Progress::Exists {
                digest: &desc.digest,
            });
        } else if !todo.iter().any(|(_, d)| d == diff_id) {
            todo.push((desc.clone(), diff_id.clone()));
        }
    }
    let layers_downloaded = todo.len();
    bytes_downloaded += todo.iter().map(|(d, _)| d.size).sum::<u64>();
    if !todo.is_empty() {
        download_layers(client, store, reference, todo, progress).await?;
    }

    // Everything the image needs is stored: config, manifests, what the registry holds, names.
    let image = store.put_config(&config_bytes)?;
    store.write_blob_bytes(&resolved.manifest.bytes)?;
    if let Some(index) = &resolved.index {
        store.write_blob_bytes(&index.bytes)?;
    }
    let mut seen: Vec<BlobSighting> = manifest
        .layers
        .iter()
        .zip(&diff_ids)
        .map(|(d, l)| sighting(d, Some(l)))
        .collect();
    seen.push(sighting(&manifest.config, None));
    // Only knowledge: a failure to remember it must not fail the pull.
    let _ = store.record_remote_blobs(reference.registry(), reference.repository(), &seen);
    let digest_ref = reference.with_digest(repo_digest.clone());
    let tag_ref = reference.tag().map(|t| reference.with_tag(t)).transpose()?;
    let id = image.id.clone();
    let previous = store.update_refs(|idx| {
        let key = tag_ref.as_ref().unwrap_or(&digest_ref).to_string();
        let prev = idx.refs.get(&key).cloned();
        if let Some(t) = &tag_ref {
            idx.refs.insert(t.to_string(), id.clone());
        }
        idx.refs.insert(digest_ref.to_string(), id.clone());
        idx.refs.remove(id.as_str());
        Ok(prev)
    })?;
    Ok(PulledImage {
        up_to_date: previous.as_ref() == Some(&image.id),
        image,
        repo_digest,
        manifest_digest: resolved.manifest.digest.clone(),
        layers_downloaded,
        bytes_downloaded,
    })
}

/// Makes `reference` available in the store for `platform`: the store's image when it has a
/// complete one (no network), else a pull; with [`PullPolicy::Always`] a tag is re-resolved
/// with one `HEAD` first. This is what a build's `FROM` calls.
pub async fn ensure_image(
    client: &Client,
    store: &Store,
    reference: &Reference,
    platform: &Platform,
    policy: PullPolicy,
    progress: &ProgressFn,
) -> Result<EnsuredImage> {
    // One read of the name index serves both lookups.
    let refs = store.refs()?;
    if let Some(image) = local_image(store, &refs, reference, platform)? {
        let repo_digest = repo_digest_of(&refs, reference, &image.id);
        if policy == PullPolicy::Missing || reference.digest().is_some() {
            return Ok(EnsuredImage {
                image,
                repo_digest,
                pulled: None,
            });
        }
        match client.head_manifest(reference).await? {
            None => {
                return Err(Error::ManifestNotFound {
                    reference: reference.to_string(),
                })
            }
            Some(desc) => {
                let known = store
                    .refs()?
                    .refs
                    .get(&reference.with_digest(desc.digest.clone()).to_string())
                    .is_some_and(|id| *id == image.id);
                if known {
                    return Ok(EnsuredImage {
                        image,
                        repo_digest: Some(desc.digest),
                        pulled: None,
                    });
                }
            }
        }
    }
    let pulled = pull_image(client, store, reference, platform, progress).await?;
    Ok(EnsuredImage {
        image: pulled.image.clone(),
        repo_digest: Some(pulled.repo_digest.clone()),
        pulled: Some(pulled),
    })
}

/// The store's image for `reference` (looked up in `refs`, the store's name index) when it is
/// complete (every layer has a blob) and for `platform`.
fn local_image(
    store: &Store,
    refs: &RefIndex,
    reference: &Reference,
    platform: &Platform,
) -> Result<Option<Image>> {
    let key = match reference.digest() {
        Some(d) => reference.with_digest(d.clone()).to_string(),
        None => reference.to_string(),
    };
    let Some(id) = refs.refs.get(&key).cloned() else {
        return Ok(None);
    };
    let image = match store.image_by_id(&id) {
        Ok(i) => i,
        Err(lade_cache::Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let got = Platform {
        os: image.config.os().to_string(),
        architecture: image.config.architecture().to_string(),
        variant: image.config.variant().clone(),
        os_version: None,
    };
    if !platform.matches(&got) || image.layers.iter().any(|l| store.require_layer(l).is_err()) {
        return Ok(None);
    }
    Ok(Some(image))
}

/// The digest of a `name@digest` name (in `refs`) of image `id` in `reference`'s repository.
fn repo_digest_of(refs: &RefIndex, reference: &Reference, id: &Digest) -> Option<Digest> {
    if let Some(d) = reference.digest() {
        return Some(d.clone());
    }
    let prefix = format!("{}@", reference.name());
    refs.refs
        .iter()
        .filter(|(k, v)| *v == id && k.starts_with(&prefix))
        .find_map(|(k, _)| Digest::parse(&k[prefix.len()..]).ok())
}

fn sighting(d: &Descriptor, diff_id: Option<&Digest>) -> BlobSighting {
    BlobSighting {
        digest: d.digest.clone(),
        size: d.size,
        media_type: Some(d.media_type.clone()).filter(|m| !m.is_empty()),
        diff_id: diff_id.cloned(),
    }
}

/// Runs `f` (which blocks, typically on scoped threads plus `Handle::block_on`) without
/// starving the runtime.
fn blocking<T>(f: impl FnOnce(&Handle) -> T) -> Result<T> {
    let handle = Handle::try_current().map_err(|_| no_runtime())?;
    if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
        return Err(no_runtime());
    }
    Ok(tokio::task::block_in_place(|| f(&handle)))
}

fn no_runtime() -> Error {
    Error::io(
        "pulling or pushing an image",
        io::Error::other("needs a multi-threaded tokio runtime"),
    )
}

/// Streams layers into the store, at most `max_concurrent_downloads` at a time, each staged on
/// its own thread (see the module docs). Returns when all are committed; the first failure
/// cancels the rest.
async fn download_layers(
    client: &Client,
    store: &Store,
    reference: &Reference,
    todo: Vec<(Descriptor, Digest)>,
    progress: &ProgressFn,
) -> Result<Vec<LayerRecord>> {
    let width = client.config().max_concurrent_downloads.max(1);
    blocking(|handle| {
        std::thread::scope(|scope| {
            handle.block_on(async {
                futures_util::stream::iter(todo)
                    .map(|(desc, diff_id)| {
                        download_layer(client, store, scope, reference, desc, diff_id, progress)
                    })
                    .buffer_unordered(width)
                    .try_collect::<Vec<_>>()
                    .await
            })
        })
    })?
}

async fn download_layer<'scope>(
    client: &Client,
    store: &'scope Store,
    scope: &'scope std::thread::Scope<'scope, '_>,
    reference: &Reference,
    desc: Descriptor,
    diff_id: Digest,
    progress: &ProgressFn,
) -> Result<LayerRecord> {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let finished = Arc::new(AtomicBool::new(false));
    let disk_full = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = oneshot::channel();
    {
        let finished = finished.clone();
        let disk_full = disk_full.clone();
        let desc = desc.clone();
        let what = format!("layer {} of {}", desc.digest, reference.name());
        scope.spawn(move || {
            let mut reader = ChannelReader {
                rx,
                current: Bytes::new(),
                finished,
                reset: false,
            };
            let result = stage_download(store, &mut reader, &desc, &diff_id, &what);
            // Set before `reader` (the channel's receiver) is dropped, so the sink sees it.
            if result.as_ref().is_err_and(Error::is_disk_full) {
                disk_full.store(true, Ordering::Release);
            }
            let _ = done_tx.send(result);
        });
    }
    let mut sink = ChannelSink {
        tx: Some(PollSender::new(tx)),
        disk_full,
    };
    let fetched = client
        .fetch_blob(reference, &desc, &mut sink, progress)
        .await;
    if fetched.is_ok() {
        finished.store(true, Ordering::Release);
    }
    drop(sink);
    match (fetched, done_rx.await) {
        // The store is full: that is the answer (the download was stopped because of it).
        (_, Ok(Err(e))) if e.is_disk_full() => Err(e),
        // Otherwise a failed download (transport, digest) is the cause; after a verified
        // download, the staging thread's verdict (invalid tar, wrong diffID) is the answer.
        (Err(e), _) => Err(e),
        (Ok(()), Ok(r)) => r,
        (Ok(()), Err(_)) => Err(Error::io(
            format!("storing layer {}", desc.digest),
            io::Error::other("the staging thread stopped"),
        )),
    }
}

/// Stages one downloaded layer (restarting when the download restarts from zero), checks it
/// against the manifest and the config, and commits it.
fn stage_download(
    store: &Store,
    reader: &mut ChannelReader,
    desc: &Descriptor,
    diff_id: &Digest,
    what: &str,
) -> Result<LayerRecord> {
    let staged = loop {
        match store.stage_layer(&mut *reader, what) {
            Ok(s) => break s,
            Err(_) if std::mem::take(&mut reader.reset) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if staged.blob.digest != desc.digest || staged.blob.size != desc.size {
        return Err(Error::DigestMismatch {
            what: format!("{what} (as stored)"),
            expected: desc.digest.clone(),
            actual: staged.blob.digest.clone(),
        });
    }
    if staged.diff_id != *diff_id {
        return Err(Error::DigestMismatch {
            what: format!("{what} uncompressed, against the config's rootfs.diff_ids"),
            expected: diff_id.clone(),
            actual: staged.diff_id.clone(),
        });
    }
    Ok(staged.commit()?)
}

enum Chunk {
    Data(Bytes),
    /// The download restarts from byte 0.
    Reset,
}

/// The download side: a [`BlobSink`] feeding a bounded channel. When the staging thread has
/// stopped because the content is not a valid layer, the rest of the download is discarded so
/// that the download still ends with its digest check: a corrupt blob is reported as such. When
/// it stopped because the disk is full, the download fails at its next write: fetching the rest
/// would be for nothing.
struct ChannelSink {
    tx: Option<PollSender<Chunk>>,
    /// Set by the staging thread before it drops the receiver.
    disk_full: Arc<AtomicBool>,
}

impl ChannelSink {
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        chunk: impl FnOnce() -> Chunk,
    ) -> Poll<io::Result<()>> {
        if let Some(tx) = self.tx.as_mut() {
            let sent = match ready!(tx.poll_reserve(cx)) {
                Ok(()) => tx.send_item(chunk()).is_ok(),
                Err(_) => false,
            };
            if !sent {
                self.tx = None;
            }
        }
        if self.tx.is_none() && self.disk_full.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "the store ran out of space",
            )));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ChannelSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_send(cx, || Chunk::Data(Bytes::copy_from_slice(buf))))?;
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl BlobSink for ChannelSink {
    fn reset(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        futures_util::future::poll_fn(|cx| self.poll_send(cx, || Chunk::Reset))
    }
}

/// The staging side: a blocking reader over the channel. End of stream is an error unless the
/// download finished verified, so an abandoned download never stages as a complete layer.
struct ChannelReader {
    rx: mpsc::Receiver<Chunk>,
    current: Bytes,
    finished: Arc<AtomicBool>,
    /// A `Reset` was read: the current staging attempt must start over.
    reset: bool,
}

impl io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Chunk::Data(b)) => self.current = b,
                Some(Chunk::Reset) => {
                    self.reset = true;
                    return Err(io::Error::other("the download restarts from the beginning"));
                }
                None if self.finished.load(Ordering::Acquire) => return Ok(0),
                None => return Err(io::Error::other("the download was abandoned")),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// How one layer is pushed.
enum LayerPlan {
    /// The store has a blob of the requested compression.
    Local(LayerBlob),
    /// The registry has a blob of it in the requested compression (seen when pulling); the
    /// store would have to compress to upload.
    Remote(Descriptor),
    /// Compress, then upload.
    Compress,
}

/// A compression request: the layer, where to stream the new blob's bytes, a signal when the
/// compression starts, and where the result goes.
struct CompressJob {
    diff_id: Digest,
    tee: ChunkTx,
    started: oneshot::Sender<()>,
    reply: oneshot::Sender<Result<(LayerBlob, bool)>>,
}

/// The compressor's side of a streamed upload: batches bytes into chunks for a bounded channel.
/// Unless [`ChunkTx::finish`] is called, the receiving stream ends with an error, so an upload
/// of a compression that failed half-way is aborted, never completed.
struct ChunkTx {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    complete: Arc<AtomicBool>,
}

const UPLOAD_CHUNK: usize = 256 << 10;

impl ChunkTx {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(UPLOAD_CHUNK),
        ));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    fn finish(mut self) {
        if self.send_buf().is_ok() {
            self.complete.store(true, Ordering::Release);
        }
    }
}

impl io::Write for ChunkTx {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // At most a chunk per message, however large the write (gzip writes 1 MiB pieces), so
        // the channel holds at most 8 x 256 KiB.
        let data = &data[..data.len().min(UPLOAD_CHUNK - self.buf.len())];
        self.buf.extend_from_slice(data);
        if self.buf.len() >= UPLOAD_CHUNK {
            self.send_buf()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The upload's side: chunks until the compressor finishes (or an error if it does not).
fn chunk_stream(
    rx: mpsc::Receiver<Bytes>,
    complete: Arc<AtomicBool>,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold(Some((rx, complete)), |state| async move {
        let (mut rx, complete) = state?;
        match rx.recv().await {
            Some(b) => Some((Ok(b), Some((rx, complete)))),
            None if complete.load(Ordering::Acquire) => None,
            None => Some((
                Err(io::Error::other("the layer's compression stopped")),
                None,
            )),
        }
    })
}

/// Pushes `image` from `store` to `target` (see the module docs) and records `name@digest`.
pub async fn push_image(
    client: &Client,
    store: &Store,
    image: &Image,
    target: &Reference,
    opts: &PushOptions,
    progress: &ProgressFn,
) -> Result<PushedImage> {
    let c = opts.compression;
    let oci = c == Compression::Zstd;
    // Reachability and credentials first (one HEAD with the push scope), so that a wrong
    // password or an unknown registry fails before any layer is compressed.
    client.blob_exists(target, &image.id).await?;
    let remote = store.remote_blobs(target.registry());
    let layer_media_type = |c: Compression| -> &'static str {
        match (oci, c) {
            (false, Compression::Gzip) => crate::manifest::DOCKER_LAYER_GZIP,
            (false, Compression::None) => "application/vnd.docker.image.rootfs.diff.tar",
            (_, c) => c.layer_media_type(),
        }
    };
    let mut plans = Vec::new();
    for diff_id in &image.layers {
        let rec = store.require_layer(diff_id)?;
        let plan = match rec.blob(c).filter(|b| store.has_blob(&b.digest)) {
            Some(b) => LayerPlan::Local(b.clone()),
            None => match remote.iter().find(|(_, r)| {
                r.diff_id.as_ref() == Some(diff_id)
                    && r.media_type
                        .as_deref()
                        .and_then(Compression::from_media_type)
                        == Some(c)
            }) {
                Some((d, r)) => {
                    LayerPlan::Remote(Descriptor::new(layer_media_type(c), d.clone(), r.size))
                }
                None => LayerPlan::Compress,
            },
        };
        plans.push((diff_id.clone(), rec.size, plan));
    }
    let mount_from = |d: &Digest| -> Vec<String> {
        remote
            .get(d)
            .map(|r| r.repositories.clone())
            .unwrap_or_default()
    };
    // Layer threads read, hash and write their layer; gzip's deflate work goes to the store's
    // process-wide pool (one thread per core), so more layers at once do not oversubscribe.
    let compressors = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(
            plans
                .iter()
                .filter(|p| !matches!(p.2, LayerPlan::Local(_)))
                .count(),
        );
    let width = client.config().max_concurrent_uploads.max(1);
    let config_desc = Descriptor::new(
        if oci { OCI_CONFIG } else { DOCKER_CONFIG },
        image.id.clone(),
        image.config_bytes.len() as u64,
    );
    let config_source = BlobSource::Bytes(Bytes::from(image.config_bytes.clone()));
    let config_from = mount_from(&image.id);
    let compressed = AtomicUsize::new(0);
    let (config_ref, config_source, config_from, compressed_ref) =
        (&config_desc, &config_source, &config_from, &compressed);
    let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<CompressJob>();
    let jobs_rx = Mutex::new(jobs_rx);

    let (layers, config_pushed) = blocking(|handle| {
        std::thread::scope(|scope| {
            for _ in 0..compressors {
                let jobs_rx = &jobs_rx;
                scope.spawn(move || loop {
                    let job = match jobs_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(mut job) = job else { return };
                    let _ = job.started.send(());
                    let r = store.compress_layer_tee(&job.diff_id, c, Some(&mut job.tee));
                    if let Ok((b, fresh)) = &r {
                        // Before the stream ends, so the display knows the blob's digest
                        // before the upload reports on it.
                        progress.emit(Progress::Compressed {
                            layer: &job.diff_id,
                            digest: &b.digest,
                            size: b.size,
                        });
                        if *fresh {
                            job.tee.finish();
                        }
                    }
                    let _ = job.reply.send(r.map_err(Error::from));
                });
            }
            handle.block_on(async move {
                // Compresses a layer once (recording the blob in the store) while streaming the
                // same bytes to the registry; a failed stream falls back to pushing the file.
                let compress = |diff_id: Digest, total: u64| {
                    let jobs_tx = jobs_tx.clone();
                    async move {
                        progress.emit(Progress::Compressing {
                            layer: &diff_id,
                            total,
                        });
                        let (tx, rx) = mpsc::channel(8);
                        let complete = Arc::new(AtomicBool::new(false));
                        let (started_tx, started_rx) = oneshot::channel();
                        let (reply_tx, reply_rx) = oneshot::channel();
                        jobs_tx
                            .send(CompressJob {
                                diff_id: diff_id.clone(),
                                tee: ChunkTx {
                                    tx,
                                    buf: Vec::with_capacity(UPLOAD_CHUNK),
                                    complete: complete.clone(),
                                },
                                started: started_tx,
                                reply: reply_tx,
                            })
                            .map_err(|_| compressor_gone())?;
                        // Open the upload only when the compressor starts producing.
                        let streamed = match started_rx.await {
                            Ok(()) => {
                                let (up, done) = futures_util::future::join(
                                    client.upload_byte_stream(
                                        target,
                                        chunk_stream(rx, complete),
                                        &ProgressFn::none(),
                                    ),
                                    reply_rx,
                                )
                                .await;
                                let (blob, fresh) = done.map_err(|_| compressor_gone())??;
                                (blob, up.ok().filter(|_| fresh))
                            }
                            Err(_) => {
                                let (blob, _) = reply_rx.await.map_err(|_| compressor_gone())??;
                                (blob, None)
                            }
                        };
                        compressed_ref.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, Error>(streamed)
                    }
                };
                let layers = futures_util::stream::iter(plans)
                    .map(|(diff_id, total, plan)| {
                        let compress = &compress;
                        let mount_from = &mount_from;
                        async move {
                            let (blob, streamed) = match plan {
                                LayerPlan::Local(b) => (b, None),
                                LayerPlan::Remote(desc) => {
                                    let from = mount_from(&desc.digest);
                                    if let Some(p) =
                                        client.link_blob(target, &desc, &from, progress).await?
                                    {
                                        return Ok((desc, p));
                                    }
                                    compress(diff_id, total).await?
                                }
                                LayerPlan::Compress => compress(diff_id, total).await?,
                            };
                            let desc = Descriptor::new(
                                layer_media_type(blob.compression),
                                blob.digest.clone(),
                                blob.size,
                            );
                            if streamed == Some((blob.digest.clone(), blob.size)) {
                                progress.emit(Progress::Finished {
                                    digest: &blob.digest,
                                    total: blob.size,
                                });
                                return Ok((desc, PushedBlob::Uploaded));
                            }
                            let source = BlobSource::File(store.blob_path(&blob.digest));
                            let from = mount_from(&blob.digest);
                            let p = client
                                .push_blob(target, &desc, &source, &from, progress)
                                .await?;
                            Ok::<_, Error>((desc, p))
                        }
                    })
                    .buffered(width)
                    .try_collect::<Vec<_>>();
                let config =
                    client.push_blob(target, config_ref, config_source, config_from, progress);
                let (layers, config) = futures_util::future::join(layers, config).await;
                drop(jobs_tx);
                Ok::<_, Error>((layers?, config?))
            })
        })
    })??;

    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": if oci { OCI_MANIFEST } else { DOCKER_MANIFEST_V2 },
        "config": config_desc,
        "layers": layers.iter().map(|(d, _)| d).collect::<Vec<_>>(),
    });
    let media_type = if oci {
        OCI_MANIFEST
    } else {
        DOCKER_MANIFEST_V2
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::InvalidManifest {
        what: target.to_string(),
        reason: e.to_string(),
    })?;
    Manifest::parse(&bytes, Some(media_type), &target.to_string())?;
    let digest = client.put_manifest(target, media_type, &bytes).await?;

    // Knowledge and names; the push itself has succeeded, so these are best effort except the
    // manifest blob and RepoDigest, which are cheap local writes.
    let mut seen: Vec<BlobSighting> = layers
        .iter()
        .zip(&image.layers)
        .map(|((d, _), l)| sighting(d, Some(l)))
        .collect();
    seen.push(sighting(&config_desc, None));
    let _ = store.record_remote_blobs(target.registry(), target.repository(), &seen);
    store.write_blob_bytes(&bytes)?;
    let digest_ref = target.with_digest(digest.clone());
    store.update_refs(|idx| {
        idx.refs.insert(digest_ref.to_string(), image.id.clone());
        idx.refs.remove(image.id.as_str());
        Ok(())
    })?;
    let mut blobs: Vec<PushedBlob> = layers.into_iter().map(|(_, p)| p).collect();
    blobs.push(config_pushed);
    let layers_compressed = compressed.load(Ordering::Relaxed);
    Ok(PushedImage {
        reference: target.clone(),
        digest,
        size: bytes.len() as u64,
        media_type,
        blobs,
        layers_compressed,
    })
}

fn compressor_gone() -> Error {
    Error::io(
        "compressing a layer",
        io::Error::other("the compression thread stopped"),
    )
}
