//! Layers: records of which blobs hold a layer, ingestion with validation, compression on
//! demand, and snapshots (unpacked layers).
//!
//! A layer is named by its diffID (sha256 of the uncompressed tar). Its record,
//! `layers/sha256/<diffid>.json`, lists the blobs that hold it: the uncompressed tar (blob digest
//! == diffID) and/or compressed variants (gzip/zstd, each with its own blob digest). The registry
//! pushes a recorded compressed blob as is and never compresses twice ([`Store::compress_layer`]
//! returns the recorded one).
//!
//! A snapshot, `snapshots/<diffid>/`, is the layer unpacked alone, containerd-overlay style:
//! OCI whiteouts become overlay whiteouts, so an image's rootfs is
//! `overlay(lowerdir=top:...:bottom)` of its layers' snapshots. Snapshots are keyed by diffID,
//! not chain ID: a layer unpacked alone depends only on its own tar, so equal diffIDs give equal
//! directories and are shared across images whatever their parents. (A hardlink to a file of a
//! lower layer cannot be represented this way and is refused, as containerd does.)

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::digest::{Digest, Hasher, HashingReader, LimitedReader};
use crate::error::{Error, IoContext, Result};
use crate::extract::{extract, ExtractOptions, WhiteoutMode};
use crate::lock::{lock, LockKind};
use crate::store::{BlobWriter, StagedBlob, Store, MAX_LAYER_BYTES_ENV};
use crate::tarfmt::{write_tar, Compression, TarOptions};

/// One blob holding a layer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerBlob {
    pub digest: Digest,
    pub size: u64,
    pub compression: Compression,
}

impl LayerBlob {
    /// OCI media type of this blob.
    pub fn media_type(&self) -> &'static str {
        self.compression.layer_media_type()
    }
}

/// What the store knows about a layer (`layers/sha256/<diffid>.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerRecord {
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub size: u64,
    /// Blobs holding this layer (the uncompressed one has `digest == diff_id`).
    pub blobs: Vec<LayerBlob>,
}

impl LayerRecord {
    /// The recorded blob with this compression, if any.
    pub fn blob(&self, c: Compression) -> Option<&LayerBlob> {
        self.blobs.iter().find(|b| b.compression == c)
    }
}

/// A layer verified and written to a temp file, not yet visible (see [`Store::stage_layer`]).
#[derive(Debug)]
pub struct StagedLayer<'s> {
    pub diff_id: Digest,
    pub size: u64,
    pub blob: StagedBlob<'s>,
    pub compression: Compression,
}

impl StagedLayer<'_> {
    /// Publishes the blob and records it. Returns the layer record.
    pub fn commit(self) -> Result<LayerRecord> {
        let store = self.blob.store();
        let lb = LayerBlob {
            digest: self.blob.digest.clone(),
            size: self.blob.size,
            compression: self.compression,
        };
        self.blob.commit()?;
        store.record_layer_blob(&self.diff_id, self.size, lb)
    }
}

/// A blob writer whose bytes are also offered to `tee` (dropped at its first error).
struct TeeWriter<'t, 's> {
    out: BlobWriter<'s>,
    tee: Option<&'t mut dyn Write>,
}

impl Write for TeeWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        if let Some(t) = self.tee.as_mut() {
            if t.write_all(&buf[..n]).is_err() {
                self.tee = None;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

struct Tee<'a, 's, R> {
    inner: R,
    out: &'a mut BlobWriter<'s>,
}

impl<R: Read> Read for Tee<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Checks every entry of a layer tar (names and hardlink targets must stay below the root,
/// whiteouts must name something) and reads it to the end. Returns the uncompressed size.
fn scan_layer<R: Read>(r: R, what: &str, max: u64) -> Result<u64> {
    let limited =
        LimitedReader::new(r, max, format!("uncompressed {what}")).setting(MAX_LAYER_BYTES_ENV);
    let mut counted = CountingReader {
        inner: limited,
        n: 0,
    };
    let mut buf = vec![0u8; 256 * 1024];
    {
        let mut a = tar::Archive::new(&mut counted);
        let entries = a.entries().map_err(|e| Error::bad_tar(what, e))?;
        for e in entries {
            let mut e = e.map_err(|e| Error::bad_tar(what, e))?;
            let name = e.path_bytes().into_owned();
            check_name(what, &name, &name)?;
            if e.header().entry_type() == tar::EntryType::Link {
                if let Some(l) = e.link_name_bytes() {
                    check_name(what, &name, &l)?;
                }
            }
            let base = name
                .rsplit(|b| *b == b'/')
                .find(|c| !c.is_empty())
                .unwrap_or(b"");
            if let Some(t) = base.strip_prefix(b".wh.") {
                if t.is_empty() || t == b"." || t == b".." {
                    return Err(Error::BadEntry {
                        entry: format!("{what}: {}", String::from_utf8_lossy(&name)),
                        reason: "invalid whiteout name (whiteouts must name an entry)".into(),
                    });
                }
            }
            let size = e.header().entry_size().unwrap_or(0);
            let mut got = 0u64;
            loop {
                let n = e.read(&mut buf).map_err(|e| Error::bad_tar(what, e))?;
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            if got != size && e.header().entry_type().is_file() {
                return Err(Error::Format(format!(
                    "{what} is truncated: entry {} has {got} of {size} bytes",
                    String::from_utf8_lossy(&name)
                )));
            }
        }
    }
    io::copy(&mut counted, &mut io::sink()).map_err(|e| Error::bad_tar(what, e))?;
    Ok(counted.n)
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Refuses names that climb above the root (`../x`, `a/../../x`), like docker's breakout check.
fn check_name(what: &str, entry: &[u8], name: &[u8]) -> Result<()> {
    let mut depth = 0usize;
    for c in name.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if depth == 0 {
                    return Err(Error::BadEntry {
                        entry: format!("{what}: {}", String::from_utf8_lossy(entry)),
                        reason: format!(
                            "path {:?} points outside the layer root; refusing a path-traversing archive",
                            String::from_utf8_lossy(name)
                        ),
                    });
                }
                depth -= 1;
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

impl Store {
    fn layer_record_path(&self, diff_id: &Digest) -> PathBuf {
        self.root()
            .join("layers/sha256")
            .join(format!("{}.json", diff_id.hex()))
    }

    /// The record of a layer, `None` if the store does not know it.
    pub fn layer(&self, diff_id: &Digest) -> Result<Option<LayerRecord>> {
        let p = self.layer_record_path(diff_id);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::Json {
                    what: p.display().to_string(),
                    source: e,
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).ctx("read layer record", p),
        }
    }

    /// Like [`Store::layer`] but a missing layer (or one whose blobs are all gone) is an error.
    pub fn require_layer(&self, diff_id: &Digest) -> Result<LayerRecord> {
        match self.layer(diff_id)? {
            Some(r) if r.blobs.iter().any(|b| self.has_blob(&b.digest)) => Ok(r),
            _ => Err(Error::NotFound(format!(
                "layer {diff_id} is not in the store; load or pull the image again"
            ))),
        }
    }

    /// Adds `blob` to the record of `diff_id` (creating it). Atomic under `layers.lock`.
    pub fn record_layer_blob(
        &self,
        diff_id: &Digest,
        size: u64,
        blob: LayerBlob,
    ) -> Result<LayerRecord> {
        let _g = lock(
            &self.root().join("layers.lock"),
            LockKind::Exclusive,
            true,
            self.root(),
        )?;
        let mut rec = self.layer(diff_id)?.unwrap_or(LayerRecord {
            diff_id: diff_id.clone(),
            size,
            blobs: Vec::new(),
        });
        if rec.blobs.iter().any(|b| b.digest == blob.digest) {
            return Ok(rec);
        }
        rec.blobs.retain(|b| b.compression != blob.compression);
        rec.blobs.push(blob);
        rec.blobs.sort_by_key(|b| b.compression as u8);
        self.sync()?;
        let json = serde_json::to_vec(&rec).map_err(|e| Error::Json {
            what: format!("layer record {diff_id}"),
            source: e,
        })?;
        self.write_atomic(&self.layer_record_path(diff_id), &json)?;
        Ok(rec)
    }

    /// Streams a layer (tar, tar+gzip or tar+zstd, detected) into a staged blob, stored as
    /// given (compressed input stays compressed: no recompression on push), while computing
    /// its diffID in the same pass and validating every entry (no path traversal, no invalid
    /// whiteouts, no truncation, uncompressed size capped). Nothing is visible until
    /// [`StagedLayer::commit`].
    pub fn stage_layer<R: Read>(&self, r: R, what: &str) -> Result<StagedLayer<'_>> {
        let mut br = BufReader::with_capacity(1 << 20, r);
        let head = br.fill_buf().ctx("read", what.to_string())?;
        let compression = Compression::detect(head);
        let mut w = self.blob_writer()?;
        let max = self.opts.max_layer_bytes;
        let (diff_id, size) = {
            let tee = Tee {
                inner: br,
                out: &mut w,
            };
            match compression {
                Compression::None => {
                    let size = scan_layer(tee, what, max)?;
                    (None, size)
                }
                Compression::Gzip => {
                    let mut h = HashingReader::new(flate2::read::MultiGzDecoder::new(tee));
                    let size = scan_layer(&mut h, what, max)?;
                    let (d, _, _) = h.finish().map_err(|e| Error::bad_tar(what, e))?;
                    (Some(d), size)
                }
                Compression::Zstd => {
                    let dec = zstd::stream::read::Decoder::new(tee)
                        .ctx("start zstd decoder for", what.to_string())?;
                    let mut h = HashingReader::new(dec);
                    let size = scan_layer(&mut h, what, max)?;
                    let (d, _, _) = h.finish().map_err(|e| Error::bad_tar(what, e))?;
                    (Some(d), size)
                }
            }
        };
        let blob = w.finish(None, None)?;
        let diff_id = diff_id.unwrap_or_else(|| blob.digest.clone());
        Ok(StagedLayer {
            diff_id,
            size,
            blob,
            compression,
        })
    }

    /// [`Store::stage_layer`] + verification against `expected_diff_id` + commit.
    pub fn add_layer<R: Read>(
        &self,
        r: R,
        expected_diff_id: Option<&Digest>,
    ) -> Result<LayerRecord> {
        let what = expected_diff_id.map_or_else(|| "layer".to_string(), |d| format!("layer {d}"));
        let staged = self.stage_layer(r, &what)?;
        if let Some(e) = expected_diff_id {
            if *e != staged.diff_id {
                return Err(Error::DigestMismatch {
                    what: "layer (uncompressed)".into(),
                    expected: e.to_string(),
                    actual: staged.diff_id.to_string(),
                });
            }
        }
        staged.commit()
    }

    /// The uncompressed tar of a layer as a stream (from the uncompressed blob when present,
    /// else by decompressing a compressed one). Not re-verified: see [`Store::check`].
    pub fn open_layer(&self, diff_id: &Digest) -> Result<Box<dyn Read + Send>> {
        let rec = self.require_layer(diff_id)?;
        let mut blobs = rec.blobs.clone();
        blobs.sort_by_key(|b| b.compression != Compression::None);
        for b in blobs {
            let f = match self.open_blob(&b.digest) {
                Ok(f) => f,
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let br = BufReader::with_capacity(1 << 20, f);
            return Ok(match b.compression {
                Compression::None => Box::new(br),
                Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
                Compression::Zstd => Box::new(
                    zstd::stream::read::Decoder::with_buffer(br)
                        .ctx("start zstd decoder for", self.blob_path(&b.digest))?,
                ),
            });
        }
        Err(Error::NotFound(format!(
            "no blob of layer {diff_id} is in the store"
        )))
    }

    /// Returns the layer as a blob with compression `c`, creating (and recording) it from the
    /// uncompressed stream if needed. The registry calls this before pushing: a layer is
    /// compressed at most once per compression.
    pub fn compress_layer(&self, diff_id: &Digest, c: Compression) -> Result<LayerBlob> {
        self.compress_layer_tee(diff_id, c, None).map(|(b, _)| b)
    }

    /// [`Store::compress_layer`] that also hands every byte of a newly made blob to `tee` as it
    /// is written (to upload it in the same pass). Returns whether the blob was made now (and
    /// so fully teed); `false` means the recorded blob was returned and `tee` got nothing. An
    /// error from `tee` only stops the tee, never the compression.
    pub fn compress_layer_tee(
        &self,
        diff_id: &Digest,
        c: Compression,
        tee: Option<&mut dyn Write>,
    ) -> Result<(LayerBlob, bool)> {
        let rec = self.require_layer(diff_id)?;
        if let Some(b) = rec.blob(c) {
            if self.has_blob(&b.digest) {
                return Ok((b.clone(), false));
            }
        }
        let mut src = HashingReader::new(self.open_layer(diff_id)?);
        let w = TeeWriter {
            out: self.blob_writer()?,
            tee,
        };
        let staged = match c {
            Compression::None => {
                let mut w = w;
                io::copy(&mut src, &mut w).ctx("copy layer", diff_id.to_string())?;
                w.out.finish(None, None)?
            }
            Compression::Gzip => {
                let mut enc = crate::gzip::GzEncoder::new(w, crate::gzip::LAYER_LEVEL);
                enc.write_from(&mut src)
                    .ctx("compress layer", diff_id.to_string())?;
                enc.finish()
                    .ctx("compress layer", diff_id.to_string())?
                    .out
                    .finish(None, None)?
            }
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(w, 3)
                    .ctx("compress layer", diff_id.to_string())?;
                io::copy(&mut src, &mut enc).ctx("compress layer", diff_id.to_string())?;
                enc.finish()
                    .ctx("compress layer", diff_id.to_string())?
                    .out
                    .finish(None, None)?
            }
        };
        let (got, size, _) = src.finish().ctx("read layer", diff_id.to_string())?;
        if got != *diff_id {
            return Err(Error::DigestMismatch {
                what: format!("stored layer {diff_id}"),
                expected: diff_id.to_string(),
                actual: got.to_string(),
            });
        }
        let lb = LayerBlob {
            digest: staged.digest.clone(),
            size: staged.size,
            compression: c,
        };
        staged.commit()?;
        self.record_layer_blob(diff_id, size, lb.clone())?;
        Ok((lb, true))
    }

    /// Path of a layer's snapshot directory (whether or not it exists).
    pub fn snapshot_path(&self, diff_id: &Digest) -> PathBuf {
        self.root().join("snapshots").join(diff_id.hex())
    }

    pub fn has_snapshot(&self, diff_id: &Digest) -> bool {
        self.snapshot_path(diff_id).is_dir()
    }

    /// Makes sure the snapshot of a layer exists and returns its path. Unpacks into a temp dir
    /// (verifying the diffID of the stream), syncs, then renames into place; when another
    /// process won the race its copy is kept and ours discarded.
    pub fn ensure_snapshot(&self, diff_id: &Digest) -> Result<PathBuf> {
        let dest = self.snapshot_path(diff_id);
        if dest.is_dir() {
            return Ok(dest);
        }
        let tmp = self.temp_dir("snap-")?;
        let mut src = HashingReader::new(self.open_layer(diff_id)?);
        let opts = ExtractOptions {
            whiteouts: WhiteoutMode::Overlay,
            overlay_xattrs: self.opts.overlay_xattrs(),
            same_owner: self.opts.rootless.is_none(),
            skip_devices_without_privilege: self.opts.rootless.is_some(),
            max_bytes: self.opts.max_layer_bytes,
            what: format!("layer {diff_id}"),
            ..Default::default()
        };
        extract(&mut src, tmp.path(), &opts).map_err(|e| match e {
            // Name where it was written (extract names entries relative to its root).
            Error::DiskFull { what, path, quota } => Error::DiskFull {
                what: format!("{what} {} (unpacking layer {diff_id}) in", path.display()),
                path: tmp.path().to_path_buf(),
                quota,
            },
            e => e,
        })?;
        let (got, _, _) = src.finish().ctx("read layer", diff_id.to_string())?;
        if got != *diff_id {
            return Err(Error::DigestMismatch {
                what: format!("stored layer {diff_id} (the blob is corrupt; run `lade prune` and load the image again)"),
                expected: diff_id.to_string(),
                actual: got.to_string(),
            });
        }
        fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .ctx("chmod", tmp.path())?;
        if self.opts.fsync {
            let f = File::open(tmp.path()).ctx("open", tmp.path())?;
            nix::unistd::syncfs(&f)
                .map_err(|e| Error::io("syncfs", tmp.path().to_path_buf(), e.into()))?;
        }
        self.publish_dir(tmp.keep(), &dest)?;
        Ok(dest)
    }

    /// Renames a finished directory to `dest`; if `dest` appeared meanwhile, drops ours.
    fn publish_dir(&self, src: PathBuf, dest: &Path) -> Result<()> {
        match fs::rename(&src, dest) {
            Ok(()) => {
                self.mark_dirty(self.root().join("snapshots"));
                Ok(())
            }
            Err(_) if dest.is_dir() => {
                crate::store::remove_tree(&src).ctx("remove duplicate snapshot", &src)?;
                Ok(())
            }
            Err(e) => Err(e).ctx("rename snapshot into place", dest),
        }
    }

    /// Ensures the snapshots of `diff_ids` (in parallel) and returns their paths in the same
    /// order (bottom layer first, as in the image config). For overlayfs, `lowerdir=` wants the
    /// reverse: see [`lowerdir_option`].
    pub fn ensure_snapshots(&self, diff_ids: &[Digest]) -> Result<Vec<PathBuf>> {
        let missing: Vec<&Digest> = diff_ids.iter().filter(|d| !self.has_snapshot(d)).collect();
        if !missing.is_empty() {
            let workers = std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .min(missing.len());
            let next = AtomicUsize::new(0);
            let results: Vec<Result<()>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..workers)
                    .map(|_| {
                        s.spawn(|| -> Result<()> {
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                let Some(d) = missing.get(i) else {
                                    return Ok(());
                                };
                                self.ensure_snapshot(d)?;
                            }
                        })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(Error::Format("snapshot worker panicked".into()))
                        })
                    })
                    .collect()
            });
            for r in results {
                r?;
            }
            self.sync()?;
        }
        Ok(diff_ids.iter().map(|d| self.snapshot_path(d)).collect())
    }

    /// Turns a finished overlayfs upperdir (which must be inside the store, e.g. under
    /// [`Store::temp_dir`]) into a layer: writes its deterministic tar (overlay whiteouts become
    /// `.wh.` entries) as the layer's uncompressed blob, records it, then renames the upperdir
    /// to the layer's snapshot (no file data is copied). Returns the record; the snapshot is at
    /// [`Store::snapshot_path`]`(&record.diff_id)`. The upperdir is gone afterwards.
    pub fn commit_upperdir(&self, upper: &Path, opts: &TarOptions) -> Result<LayerRecord> {
        let topts = TarOptions {
            upperdir: true,
            // Rootless: the sandbox's root is the caller, and so is the owner of what it made.
            caller_as_root: self.opts.rootless,
            // Only the namespace the sandbox mounted the upperdir with marks opaque dirs.
            overlay_xattrs: self.opts.overlay_xattrs(),
            ..*opts
        };
        let (diff_id, rec) = self.add_uncompressed_layer(upper, &topts)?;
        if self.opts.fsync {
            let f = File::open(upper).ctx("open", upper)?;
            let _ = nix::unistd::syncfs(&f);
        }
        self.publish_dir(upper.to_path_buf(), &self.snapshot_path(&diff_id))?;
        self.sync()?;
        Ok(rec)
    }

    /// Writes a directory as a new layer (the `lade import DIR` path): deterministic tar,
    /// uncompressed blob, record. No snapshot is made (see [`Store::ensure_snapshot`]).
    pub fn add_layer_from_dir(&self, dir: &Path, opts: &TarOptions) -> Result<LayerRecord> {
        Ok(self.add_uncompressed_layer(dir, opts)?.1)
    }

    /// Writes the tar of `dir` (with `opts`, but uncompressed whatever they say) as a blob and
    /// records it as a layer. Returns the diff ID of the tar written and the layer's record.
    fn add_uncompressed_layer(
        &self,
        dir: &Path,
        opts: &TarOptions,
    ) -> Result<(Digest, LayerRecord)> {
        let mut w = self.blob_writer()?;
        let topts = TarOptions {
            compression: Compression::None,
            ..*opts
        };
        let d = write_tar(dir, &topts, &mut w)?;
        let staged = w.finish(Some(&d.diff_id), Some(d.size))?;
        let lb = LayerBlob {
            digest: staged.digest.clone(),
            size: staged.size,
            compression: Compression::None,
        };
        staged.commit()?;
        let rec = self.record_layer_blob(&d.diff_id, d.size, lb)?;
        Ok((d.diff_id, rec))
    }

    /// Total uncompressed size of layers (0 for unknown ones).
    pub fn layers_size(&self, diff_ids: &[Digest]) -> u64 {
        diff_ids
            .iter()
            .filter_map(|d| self.layer(d).ok().flatten())
            .map(|r| r.size)
            .sum()
    }
}

/// The overlayfs `lowerdir=` value for snapshot paths given bottom-first (as returned by
/// [`Store::ensure_snapshots`]): top-most first, colon-separated.
pub fn lowerdir_option(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

pub(crate) fn hash_file(p: &Path) -> Result<(Digest, u64)> {
    let mut f = File::open(p).ctx("open", p)?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).ctx("read", p)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let len = h.len();
    Ok((h.finish(), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path().join("root")).unwrap();
        (t, s)
    }

    fn sample_tar(dir: &Path) -> (Vec<u8>, Digest) {
        fs::create_dir_all(dir.join("etc")).unwrap();
        fs::write(dir.join("etc/hostname"), b"lade\n").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.join("link")).unwrap();
        let mut v = Vec::new();
        let d = write_tar(dir, &TarOptions::default(), &mut v).unwrap();
        (v, d.diff_id)
    }

    #[test]
    fn add_layer_plain_and_gzip_share_diff_id() {
        let (t, s) = store();
        let (tarb, diff) = sample_tar(&t.path().join("src"));
        let rec = s.add_layer(&tarb[..], Some(&diff)).unwrap();
        assert_eq!(rec.diff_id, diff);
        assert_eq!(rec.blobs[0].digest, diff);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tarb).unwrap();
        let gz = gz.finish().unwrap();
        let rec = s.add_layer(&gz[..], Some(&diff)).unwrap();
        assert_eq!(rec.blobs.len(), 2);
        let g = rec.blob(Compression::Gzip).unwrap();
        assert_eq!(g.digest, Digest::of(&gz));
        // compress_layer returns the recorded blob, it does not compress again.
        assert_eq!(&s.compress_layer(&diff, Compression::Gzip).unwrap(), g);
        let z = s.compress_layer(&diff, Compression::Zstd).unwrap();
        assert!(s.has_blob(&z.digest));
        let mut back = Vec::new();
        s.open_layer(&diff).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, tarb);
    }

    #[test]
    fn compress_layer_tee_sees_exactly_the_blob() {
        let (t, s) = store();
        let (tarb, diff) = sample_tar(&t.path().join("src"));
        s.add_layer(&tarb[..], Some(&diff)).unwrap();
        let mut seen = Vec::new();
        let (b, fresh) = s
            .compress_layer_tee(&diff, Compression::Gzip, Some(&mut seen))
            .unwrap();
        assert!(fresh);
        assert_eq!(Digest::of(&seen), b.digest);
        assert_eq!(seen.len() as u64, b.size);
        let mut again = Vec::new();
        let (b2, fresh) = s
            .compress_layer_tee(&diff, Compression::Gzip, Some(&mut again))
            .unwrap();
        assert!(!fresh && again.is_empty());
        assert_eq!(b2, b);
    }

    #[test]
    fn add_layer_wrong_diff_id_leaves_nothing() {
        let (t, s) = store();
        let (tarb, _) = sample_tar(&t.path().join("src"));
        let wrong = Digest::of(b"nope");
        assert!(matches!(
            s.add_layer(&tarb[..], Some(&wrong)),
            Err(Error::DigestMismatch { .. })
        ));
        assert_eq!(
            fs::read_dir(s.root().join("blobs/sha256")).unwrap().count(),
            0
        );
        assert_eq!(fs::read_dir(s.root().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn snapshot_from_layer_and_from_upperdir() {
        let (t, s) = store();
        let (tarb, diff) = sample_tar(&t.path().join("src"));
        s.add_layer(&tarb[..], None).unwrap();
        let paths = s.ensure_snapshots(std::slice::from_ref(&diff)).unwrap();
        assert_eq!(fs::read(paths[0].join("etc/hostname")).unwrap(), b"lade\n");
        assert_eq!(
            fs::read_link(paths[0].join("link")).unwrap(),
            Path::new("/etc/hostname")
        );
        // Twice is a no-op.
        s.ensure_snapshot(&diff).unwrap();
        assert_eq!(
            lowerdir_option(&[PathBuf::from("/a"), PathBuf::from("/b")]),
            "/b:/a"
        );

        let up = s.temp_dir("upper-").unwrap().keep();
        fs::write(up.join("new"), b"x").unwrap();
        nix::sys::stat::mknod(
            &up.join("gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let rec = s.commit_upperdir(&up, &TarOptions::default()).unwrap();
        assert!(!up.exists());
        let snap = s.snapshot_path(&rec.diff_id);
        assert_eq!(fs::read(snap.join("new")).unwrap(), b"x");
        let mut tarb = Vec::new();
        s.open_layer(&rec.diff_id)
            .unwrap()
            .read_to_end(&mut tarb)
            .unwrap();
        let names: Vec<String> = tar::Archive::new(&tarb[..])
            .entries()
            .unwrap()
            .map(|e| String::from_utf8(e.unwrap().path_bytes().to_vec()).unwrap())
            .collect();
        assert_eq!(names, vec![".wh.gone", "new"]);
    }

    #[test]
    fn stage_layer_refuses_traversal() {
        let (_t, s) = store();
        let mut v = Vec::new();
        v.extend_from_slice(&crate::tarfmt::ustar(
            b"../evil",
            0o644,
            0,
            0,
            0,
            0,
            b'0',
            b"",
            (0, 0),
        ));
        v.extend_from_slice(&[0u8; 1024]);
        let e = s.add_layer(&v[..], None).unwrap_err().to_string();
        assert!(e.contains("outside the layer root"), "{e}");
    }
}
