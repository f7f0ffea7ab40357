//! Progress reporting, download sinks and upload sources: the seams between this crate, the
//! CLI's progress display and the store.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncSeekExt, AsyncWrite};

use lade_cache::Digest;

/// One progress event for one blob. The crate never prints; the CLI renders these.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A transfer starts; `done` is non-zero when it resumes after a broken connection.
    Started {
        digest: &'a Digest,
        done: u64,
        total: u64,
    },
    /// `done` bytes of `total` have been transferred (cumulative).
    Advanced {
        digest: &'a Digest,
        done: u64,
        total: u64,
    },
    /// The transfer failed and will be tried again after a pause. `done` is what is kept: 0
    /// when it restarts from scratch, the resume offset otherwise.
    Retrying {
        digest: &'a Digest,
        attempt: u32,
        done: u64,
        error: &'a str,
    },
    /// Nothing to transfer: the destination already has the blob (the registry's repository
    /// on push; on pull, the store has the layer, by diffID).
    Exists { digest: &'a Digest },
    /// Nothing to transfer: the registry linked the blob from another repository.
    Mounted { digest: &'a Digest, from: &'a str },
    /// The blob is complete and verified (pull) or committed by the registry (push).
    Finished { digest: &'a Digest, total: u64 },
    /// Push: layer `layer` (a diffID, `total` bytes uncompressed) is being compressed because
    /// the store has no blob of it in the requested compression yet.
    Compressing { layer: &'a Digest, total: u64 },
    /// Push: layer `layer` is now blob `digest` (`size` bytes), remembered by the store; the
    /// blob's transfer events follow under `digest`.
    Compressed {
        layer: &'a Digest,
        digest: &'a Digest,
        size: u64,
    },
}

type Callback = dyn for<'a> Fn(Progress<'a>) + Send + Sync;

/// A cheaply cloneable progress callback, called from whatever task does the transfer.
#[derive(Clone)]
pub struct ProgressFn(Arc<Callback>);

impl ProgressFn {
    pub fn new(f: impl for<'a> Fn(Progress<'a>) + Send + Sync + 'static) -> ProgressFn {
        ProgressFn(Arc::new(f))
    }

    /// Ignores every event.
    pub fn none() -> ProgressFn {
        ProgressFn::new(|_| {})
    }

    pub(crate) fn emit(&self, p: Progress<'_>) {
        (self.0)(p)
    }
}

impl Default for ProgressFn {
    fn default() -> ProgressFn {
        ProgressFn::none()
    }
}

impl fmt::Debug for ProgressFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressFn")
    }
}

/// Where a downloaded blob is written. The crate writes every byte it receives in order,
/// verifies the digest and size at the end, and returns an error on mismatch: a caller commits
/// the sink's content (e.g. renames its temp file into the store) only after `Ok`.
pub trait BlobSink: AsyncWrite + Unpin + Send {
    /// Discards everything written so far: the download restarts from byte 0 (the registry
    /// ignored a `Range` request, or a resumed download did not verify).
    fn reset(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

impl BlobSink for tokio::fs::File {
    async fn reset(&mut self) -> io::Result<()> {
        self.set_len(0).await?;
        self.seek(io::SeekFrom::Start(0)).await?;
        Ok(())
    }
}

impl BlobSink for Vec<u8> {
    async fn reset(&mut self) -> io::Result<()> {
        self.clear();
        Ok(())
    }
}

impl<T: BlobSink + ?Sized> BlobSink for &mut T {
    fn reset(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        (**self).reset()
    }
}

/// The bytes of a blob to upload. Re-readable, so a failed upload can start again.
#[derive(Debug, Clone)]
pub enum BlobSource {
    /// In memory (configs, small layers).
    Bytes(Bytes),
    /// A file, e.g. a blob in the store; read from the start on every attempt.
    File(PathBuf),
}

impl From<Vec<u8>> for BlobSource {
    fn from(v: Vec<u8>) -> BlobSource {
        BlobSource::Bytes(Bytes::from(v))
    }
}

impl From<PathBuf> for BlobSource {
    fn from(p: PathBuf) -> BlobSource {
        BlobSource::File(p)
    }
}
