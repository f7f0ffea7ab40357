//! The store: on-disk layout, opening and locking, blobs.
//!
//! ```text
//! ROOT/
//!   lock                         flock: shared by every open Store, exclusive for prune
//!   refs.json                    the name index (see images.rs), replaced atomically
//!   refs.lock                    flock serialising read-modify-write of refs.json
//!   layers.lock                  flock serialising updates of layer records
//!   remotes.json                 blobs known to be on registries, per repository (remotes.rs)
//!   remotes.lock                 flock serialising read-modify-write of remotes.json
//!   blobs/sha256/<hex>           content-addressed blobs (configs, layer tars, manifests)
//!   layers/sha256/<diffid>.json  layer record: which blobs hold this layer (see layers.rs)
//!   snapshots/<diffid>/          an unpacked layer, immutable, usable as an overlay lowerdir
//!   tmp/                         temp files/dirs; anything here is garbage once no lade runs
//! ```

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::digest::{read_at_most, Digest, Hasher};
use crate::error::{Error, IoContext, Result};
use crate::lock::{lock, LockGuard, LockKind};

/// Largest JSON document (config, manifest, index) the store reads into memory.
pub const MAX_JSON_BYTES: u64 = 16 << 20;

/// Environment variable that sets [`StoreOptions::max_layer_bytes`] (default
/// [`crate::extract::DEFAULT_MAX_BYTES`]).
pub const MAX_LAYER_BYTES_ENV: &str = "LADE_MAX_LAYER_BYTES";

/// Tunables of a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// fsync blobs, snapshot trees and metadata before they become visible (default true).
    /// Off only for throwaway stores (tests, CI scratch).
    pub fsync: bool,
    /// Cap on the uncompressed size of one layer (decompression-bomb guard).
    pub max_layer_bytes: u64,
    /// Wait for the store lock instead of failing with [`Error::Busy`].
    pub wait: bool,
    /// `None` when lade runs as root; `Some((uid, gid))` of the caller otherwise (the default
    /// follows the effective ids). A rootless sandbox's user namespace maps the caller, and
    /// only the caller, to root, and mounts its overlay with `userxattr`; so for it snapshots
    /// are unpacked as the caller (not with the layers' owners) with opaque directories marked
    /// `user.overlay.opaque` (not `trusted.*`), and the caller's files in a committed upperdir
    /// are written to the layer as root's. See [`StoreOptions::overlay_xattrs`].
    pub rootless: Option<(u32, u32)>,
}

impl StoreOptions {
    /// The namespace snapshots mark opaque directories with: the one the sandbox's overlay
    /// mounts read (`trusted.*` as root, `user.*` when rootless).
    pub fn overlay_xattrs(&self) -> crate::extract::OverlayXattrs {
        match self.rootless {
            None => crate::extract::OverlayXattrs::Trusted,
            Some(_) => crate::extract::OverlayXattrs::User,
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            fsync: std::env::var_os("LADE_NO_FSYNC").is_none(),
            max_layer_bytes: std::env::var(MAX_LAYER_BYTES_ENV)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(crate::extract::DEFAULT_MAX_BYTES),
            wait: true,
            rootless: {
                let uid = nix::unistd::geteuid();
                (!uid.is_root()).then(|| (uid.as_raw(), nix::unistd::getegid().as_raw()))
            },
        }
    }
}

/// An open store. Holds a shared lock (or the exclusive one, see [`Store::open_exclusive`]) on
/// `ROOT/lock` for its whole life. `Store` is `Sync`: share it between threads by reference.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    pub(crate) opts: StoreOptions,
    exclusive: bool,
    /// Directories with renamed-in entries not yet fsynced (flushed by [`Store::sync`]).
    dirty: Mutex<BTreeSet<PathBuf>>,
    _lock: LockGuard,
}

/// The default store root: `$LADE_ROOT`, else `/var/lib/lade` for root, else
/// `$XDG_DATA_HOME/lade`, else `$HOME/.local/share/lade` (see [`default_root_for`]).
pub fn default_root() -> PathBuf {
    let var = |k: &str| std::env::var_os(k);
    default_root_for(
        var("LADE_ROOT"),
        nix::unistd::geteuid().is_root(),
        var("XDG_DATA_HOME"),
        var("HOME"),
    )
}

/// [`default_root`] as a pure function of the environment it reads: `$LADE_ROOT`, `euid == 0`,
/// `$XDG_DATA_HOME` and `$HOME` (`None` or empty = unset). An unset `$HOME` counts as `/`, as
/// the XDG base directory spec's `$HOME/.local/share` then reads.
pub fn default_root_for(
    lade_root: Option<std::ffi::OsString>,
    is_root: bool,
    xdg_data_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    let set = |v: Option<std::ffi::OsString>| v.filter(|v| !v.is_empty());
    if let Some(r) = set(lade_root) {
        return PathBuf::from(r);
    }
    if is_root {
        return PathBuf::from("/var/lib/lade");
    }
    if let Some(x) = set(xdg_data_home) {
        return PathBuf::from(x).join("lade");
    }
    let home = set(home).unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".local/share/lade")
}

fn clean_tmp(tmp: &Path) {
    if let Ok(rd) = fs::read_dir(tmp) {
        for e in rd.flatten() {
            let p = e.path();
            let _ = match e.file_type() {
                Ok(t) if t.is_dir() => remove_tree(&p),
                _ => fs::remove_file(&p),
            };
        }
    }
}

pub(crate) use crate::rmtree::remove_tree;

impl Store {
    /// Opens (creating if needed) the store at `root` with a shared lock. Cheap: a few
    /// `mkdir`/`open`/`flock` calls, no scans. When no other lade process holds the store, the
    /// leftovers of killed processes in `tmp/` are removed first.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with(root, StoreOptions::default(), LockKind::Shared)
    }

    /// Opens the store with the exclusive lock (garbage collection, repair): waits for every
    /// other `lade` process using it to finish.
    pub fn open_exclusive(root: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with(root, StoreOptions::default(), LockKind::Exclusive)
    }

    /// Opens with explicit options and lock kind.
    pub fn open_with(root: impl Into<PathBuf>, opts: StoreOptions, kind: LockKind) -> Result<Self> {
        let root = root.into();
        if !root.join("tmp").is_dir() {
            let not_a_dir = || {
                Error::Format(format!(
                    "the store root {} is not a directory (or has a file in its path): point \
                     --root or LADE_ROOT at a directory",
                    root.display()
                ))
            };
            if fs::metadata(&root).is_ok_and(|m| !m.is_dir()) {
                return Err(not_a_dir());
            }
            for d in ["blobs/sha256", "layers/sha256", "snapshots", "tmp"] {
                match fs::create_dir_all(root.join(d)) {
                    Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Err(not_a_dir()),
                    r => r.ctx("create store directory", root.join(d))?,
                }
            }
        }
        let lock_path = root.join("lock");
        let guard = if kind == LockKind::Shared {
            // If no other lade process uses the store, leftovers in tmp/ are from killed ones:
            // remove them now (one readdir of tmp/, usually empty), then share the lock.
            match lock(&lock_path, LockKind::Exclusive, false, &root) {
                Ok(g) => {
                    clean_tmp(&root.join("tmp"));
                    g.relock(LockKind::Shared, &lock_path)?;
                    g
                }
                Err(Error::Busy(_)) => lock(&lock_path, kind, opts.wait, &root)?,
                Err(e) => return Err(e),
            }
        } else {
            lock(&lock_path, kind, opts.wait, &root)?
        };
        Ok(Self {
            root,
            opts,
            exclusive: kind == LockKind::Exclusive,
            dirty: Mutex::new(BTreeSet::new()),
            _lock: guard,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A new private temp directory inside the store (same filesystem as snapshots, so it can be
    /// renamed into one). Removed on drop unless kept (`TempDir::keep`). The sandbox puts an
    /// overlay upperdir/workdir here, then calls [`Store::commit_upperdir`].
    pub fn temp_dir(&self, prefix: &str) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(self.tmp_dir())
            .ctx("create temp directory in", self.tmp_dir())
    }

    /// Path of a blob (whether or not it exists).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Size of a blob, `None` when absent.
    pub fn blob_size(&self, d: &Digest) -> Result<Option<u64>> {
        match fs::metadata(self.blob_path(d)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).ctx("stat blob", self.blob_path(d)),
        }
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        File::open(self.blob_path(d)).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::NotFound(format!(
                    "blob {d} is not in the store {}",
                    self.root.display()
                ))
            } else {
                Error::Io {
                    what: "open blob",
                    path: self.blob_path(d),
                    source: e,
                }
            }
        })
    }

    /// Reads a small blob (JSON) into memory, refusing more than `limit` bytes.
    pub fn read_blob(&self, d: &Digest, limit: u64) -> Result<Vec<u8>> {
        let f = self.open_blob(d)?;
        read_at_most(f, limit)
            .ctx("read blob", self.blob_path(d))?
            .ok_or_else(|| Error::TooLarge {
                what: format!("blob {d}"),
                limit,
                setting: None,
            })
    }

    /// A writer for a new blob; see [`BlobWriter`].
    pub fn blob_writer(&self) -> Result<BlobWriter<'_>> {
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(self.tmp_dir())
            .ctx("create temp file in", self.tmp_dir())?;
        let file = tmp.reopen().ctx("open temp file", tmp.path())?;
        Ok(BlobWriter {
            store: self,
            out: BufWriter::with_capacity(1 << 20, file),
            tmp,
            hasher: Hasher::new(),
        })
    }

    /// Stores `data` as a blob and returns its digest.
    pub fn write_blob_bytes(&self, data: &[u8]) -> Result<Digest> {
        let d = Digest::of(data);
        if self.has_blob(&d) {
            return Ok(d);
        }
        let mut w = self.blob_writer()?;
        w.write_all(data).ctx("write", w.tmp.path().to_path_buf())?;
        w.finish(Some(&d), Some(data.len() as u64))?.commit()?;
        Ok(d)
    }

    /// Streams `r` into a blob, verifying `expected` digest/size when given.
    pub fn ingest<R: Read>(
        &self,
        mut r: R,
        expected: Option<&Digest>,
        size: Option<u64>,
    ) -> Result<(Digest, u64)> {
        let mut w = self.blob_writer()?;
        io::copy(&mut r, &mut w)
            .map_err(|e| Error::io("copy into blob", w.tmp.path().to_path_buf(), e))?;
        let staged = w.finish(expected, size)?;
        let out = (staged.digest.clone(), staged.size);
        staged.commit()?;
        Ok(out)
    }

    pub(crate) fn mark_dirty(&self, dir: PathBuf) {
        if let Ok(mut d) = self.dirty.lock() {
            d.insert(dir);
        }
    }

    /// fsyncs the directories that received renamed entries since the last call, so the new
    /// names survive a power loss. Called before any metadata that points at them is published.
    pub fn sync(&self) -> Result<()> {
        if !self.opts.fsync {
            return Ok(());
        }
        let dirs = match self.dirty.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(_) => return Ok(()),
        };
        for d in dirs {
            File::open(&d)
                .and_then(|f| f.sync_all())
                .ctx("fsync directory", &d)?;
        }
        Ok(())
    }

    /// Writes `data` to `path` atomically (temp file in the same directory, fsync, rename).
    pub(crate) fn write_atomic(&self, path: &Path, data: &[u8]) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut t = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .ctx("create temp file in", dir)?;
        t.write_all(data).ctx("write", t.path().to_path_buf())?;
        if self.opts.fsync {
            t.as_file()
                .sync_all()
                .ctx("fsync", t.path().to_path_buf())?;
        }
        t.persist(path)
            .map_err(|e| Error::io("rename into place", path, e.error))?;
        if self.opts.fsync {
            File::open(dir)
                .and_then(|f| f.sync_all())
                .ctx("fsync directory", dir)?;
        }
        Ok(())
    }
}

/// Streams a new blob into a temp file in the store while hashing it. Nothing is visible in
/// `blobs/` until [`StagedBlob::commit`]; dropping either discards the temp file.
pub struct BlobWriter<'s> {
    store: &'s Store,
    out: BufWriter<File>,
    tmp: tempfile::NamedTempFile,
    hasher: Hasher,
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf).map_err(|e| self.disk_full(e))?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush().map_err(|e| self.disk_full(e))
    }
}

impl<'s> BlobWriter<'s> {
    /// `ENOSPC`/`EDQUOT` as an [`Error::DiskFull`] naming the temp file, carried in the
    /// `io::Error`: whoever reads through this writer (a tar parser teeing into it) reports a
    /// full disk instead of calling the stream corrupt.
    fn disk_full(&self, e: io::Error) -> io::Error {
        if crate::error::disk_full_errno(&e).is_some() {
            Error::io("write", self.tmp.path().to_path_buf(), e).into_io()
        } else {
            e
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// Flushes, fsyncs (per [`StoreOptions::fsync`]) and verifies digest and size. The blob is
    /// staged, not yet visible.
    pub fn finish(self, expected: Option<&Digest>, size: Option<u64>) -> Result<StagedBlob<'s>> {
        let path = self.tmp.path().to_path_buf();
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io("write", path.clone(), e.into_error()))?;
        if self.store.opts.fsync {
            file.sync_data().ctx("fsync", &path)?;
        }
        let len = self.hasher.len();
        let digest = self.hasher.finish();
        if let Some(s) = size {
            if s != len {
                return Err(Error::SizeMismatch {
                    what: expected.map_or_else(|| "blob".to_string(), |d| format!("blob {d}")),
                    expected: s,
                    actual: len,
                });
            }
        }
        if let Some(e) = expected {
            if *e != digest {
                return Err(Error::DigestMismatch {
                    what: "blob".to_string(),
                    expected: e.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        Ok(StagedBlob {
            store: self.store,
            digest,
            size: len,
            tmp: self.tmp,
        })
    }
}

/// A verified blob in a temp file, waiting to be renamed into `blobs/`.
pub struct StagedBlob<'s> {
    store: &'s Store,
    pub digest: Digest,
    pub size: u64,
    tmp: tempfile::NamedTempFile,
}

impl std::fmt::Debug for StagedBlob<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StagedBlob({}, {} bytes)", self.digest, self.size)
    }
}

impl<'s> StagedBlob<'s> {
    pub(crate) fn store(&self) -> &'s Store {
        self.store
    }

    /// Renames the blob into place (an identical existing blob is simply replaced).
    pub fn commit(self) -> Result<Digest> {
        let dest = self.store.blob_path(&self.digest);
        let _ = fs::set_permissions(
            self.tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        );
        self.tmp
            .persist(&dest)
            .map_err(|e| Error::io("rename blob into place", dest.clone(), e.error))?;
        self.store.mark_dirty(self.store.root.join("blobs/sha256"));
        Ok(self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path().join("root")).unwrap();
        (t, s)
    }

    #[test]
    fn blob_round_trip_and_verification() {
        let (_t, s) = store();
        let d = s.write_blob_bytes(b"hello").unwrap();
        assert_eq!(s.read_blob(&d, 100).unwrap(), b"hello");
        assert!(s.read_blob(&d, 2).is_err());
        let wrong = Digest::of(b"other");
        let e = s.ingest(&b"hello"[..], Some(&wrong), None).unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
        assert!(!s.has_blob(&wrong));
        let e = s.ingest(&b"hello"[..], Some(&d), Some(4)).unwrap_err();
        assert!(matches!(e, Error::SizeMismatch { .. }), "{e}");
        // Nothing left in tmp after failures.
        assert_eq!(fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn open_cleans_leftovers_only_when_alone() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let a = Store::open(&root).unwrap();
        let left = a.temp_dir("killed-").unwrap().keep();
        // Another process (here: another open) must not remove a live process's temp files.
        let b = Store::open(&root).unwrap();
        assert!(left.exists());
        drop(a);
        drop(b);
        let _c = Store::open(&root).unwrap();
        assert!(!left.exists());
    }

    #[test]
    fn default_root_follows_lade_root_then_uid_then_xdg_then_home() {
        let s = |v: &str| Some(std::ffi::OsString::from(v));
        let f = default_root_for;
        // $LADE_ROOT wins for everyone.
        assert_eq!(
            f(s("/srv/lade"), true, s("/x"), s("/h")),
            Path::new("/srv/lade")
        );
        assert_eq!(
            f(s("rel/store"), false, s("/x"), s("/h")),
            Path::new("rel/store")
        );
        // root: the system store, whatever XDG says.
        assert_eq!(
            f(None, true, s("/x"), s("/root")),
            Path::new("/var/lib/lade")
        );
        // others: XDG data home, else ~/.local/share.
        assert_eq!(f(None, false, s("/x"), s("/h")), Path::new("/x/lade"));
        assert_eq!(
            f(None, false, None, s("/home/u")),
            Path::new("/home/u/.local/share/lade")
        );
        // Empty variables count as unset.
        assert_eq!(f(s(""), true, None, None), Path::new("/var/lib/lade"));
        assert_eq!(
            f(s(""), false, s(""), s("/home/u")),
            Path::new("/home/u/.local/share/lade")
        );
        assert_eq!(f(None, false, None, None), Path::new("/.local/share/lade"));
        assert_eq!(f(None, false, None, s("")), Path::new("/.local/share/lade"));
    }

    #[test]
    fn staged_blob_invisible_until_commit() {
        let (_t, s) = store();
        let mut w = s.blob_writer().unwrap();
        w.write_all(b"abc").unwrap();
        let staged = w.finish(None, None).unwrap();
        assert!(!s.has_blob(&staged.digest));
        let d = staged.commit().unwrap();
        assert!(s.has_blob(&d));
        s.sync().unwrap();
    }
}
