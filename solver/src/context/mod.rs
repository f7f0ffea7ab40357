//! Build-context hashing: walk a context directory in parallel, apply `.dockerignore` as
//! docker/BuildKit do, resolve COPY/ADD source patterns, and digest exactly the selected
//! entries with BLAKE3, reusing a persistent stat cache so unchanged files are not re-read.
//!
//! ```no_run
//! # fn main() -> Result<(), lade_solver::context::Error> {
//! use lade_solver::context::{read_dockerignore, Context};
//! let root = std::path::Path::new("app");
//! let ignore = read_dockerignore(&root.join(".dockerignore"))?;
//! let ctx = Context::open(root, &ignore, Some(std::path::Path::new("store/statcache/app")))?;
//! let sel = ctx.select(&["src", "*.toml"])?; // COPY src *.toml /app/
//! let (_count, _digest) = (sel.entry_count(), sel.digest); // what COPY needs
//! ctx.save_stat_cache()?;
//! # Ok(()) }
//! ```
//!
//! Invariants: the digest covers relative paths, types, permission bits, uid/gid, file content
//! and link targets, never timestamps, inode numbers or the absolute root; a stat-cache record
//! is reused only if (dev, inode, size, mtime, ctime, mode) are unchanged and the file is not
//! racy (see [`statcache`]); `select` only ever sees what `.dockerignore` lets through.

pub mod ignore;
pub mod statcache;

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use lade_executor::glob;
use rayon::prelude::*;

use crate::digest::{Digest, DigestBuilder};
pub use ignore::PatternMatcher;
use ignore::{clean, MatchInfo};
pub use statcache::LoadStatus;
use statcache::{Fingerprint, Record, StatCache};

/// BLAKE3 `derive_key` context of the selection digest encoding (see [`Selection::digest`]).
pub const SELECTION_CONTEXT: &str = "lade context selection v1";

/// Files at least this big are hashed with BLAKE3's multi-threaded (rayon) mode.
const PARALLEL_HASH_MIN: u64 = 1 << 20;
const READ_BUF: usize = 4 << 20;
/// Symlinks followed while resolving one source, as Linux's `MAXSYMLINKS`-ish bound.
const MAX_LINKS: u32 = 255;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("build context {} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error(".dockerignore pattern {pattern:?} is invalid: {reason}")]
    BadIgnorePattern { pattern: String, reason: String },
    #[error("source pattern {pattern:?} is malformed (check its [ ] classes and \\ escapes)")]
    BadSourcePattern { pattern: String },
    #[error("{pattern:?}: not found in the build context (check the path and .dockerignore)")]
    NotFound { pattern: String },
    #[error("{pattern:?}: too many levels of symbolic links in the build context")]
    TooManyLinks { pattern: String },
    #[error("cannot write stat cache {}: {source}", path.display())]
    StatCacheWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads and parses a `.dockerignore` file; a missing file means no patterns.
pub fn read_dockerignore(path: &Path) -> Result<Vec<String>> {
    match std::fs::read(path) {
        Ok(b) => Ok(ignore::parse(&String::from_utf8_lossy(&b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(path)(e)),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl EntryKind {
    fn tag(self) -> u8 {
        match self {
            EntryKind::File => 1,
            EntryKind::Dir => 2,
            EntryKind::Symlink => 3,
            EntryKind::Fifo => 4,
            EntryKind::Socket => 5,
            EntryKind::CharDevice => 6,
            EntryKind::BlockDevice => 7,
        }
    }
}

/// One file, directory, symlink or special file of the context (after `.dockerignore`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the context root; empty for the root itself.
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// For symlinks: the target as stored in the link.
    pub link_target: Option<PathBuf>,
    /// For device nodes: the device number.
    pub rdev: u64,
    fp: Fingerprint,
}

/// Counters of the work a [`Context`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContextStats {
    /// Entries the walk kept (root included).
    pub entries: usize,
    /// Directories listed by the walk (excluded directories that could hold nothing
    /// re-included are never listed).
    pub dirs_read: u64,
    /// Files whose content was read and hashed.
    pub files_read: u64,
    pub bytes_read: u64,
    /// Files whose hash came from the stat cache.
    pub files_reused: u64,
}

#[derive(Default)]
struct Counters {
    dirs_read: AtomicU64,
    files_read: AtomicU64,
    bytes_read: AtomicU64,
    files_reused: AtomicU64,
}

/// A walked build context. `Sync`: share it (in an `Arc`) between the COPY ops of a build;
/// each file is hashed at most once. Its methods block and use rayon: call them from
/// `spawn_blocking`, not from an async task.
pub struct Context {
    root: PathBuf,
    /// Sorted by path (component-wise), so a directory's descendants follow it contiguously;
    /// `entries[0]` is the root.
    entries: Vec<Entry>,
    hashes: Vec<OnceLock<Digest>>,
    stat_cache_path: Option<PathBuf>,
    old: StatCache,
    reference_ns: i64,
    load_status: LoadStatus,
    counters: Counters,
}

/// One matched source of a [`Selection`].
#[derive(Clone, Debug)]
pub struct SelectedSource {
    /// The pattern as given.
    pub pattern: String,
    /// The matched path in the context, before following a symlink (its base name is what a
    /// COPY of a file to a directory destination is named); empty for the context root.
    pub path: PathBuf,
    /// The entry copied: `path` with every symlink followed (inside the context).
    pub resolved: PathBuf,
    /// What is copied: the resolved entry itself (`rel` empty), then, for a directory, all its
    /// descendants (symlinks inside stay symlinks), sorted by path.
    pub entries: Vec<SelectedEntry>,
}

#[derive(Clone, Debug)]
pub struct SelectedEntry {
    /// Path relative to the source (empty for the source itself).
    pub rel: PathBuf,
    /// The context entry (its `path` is relative to the context root: read it from
    /// `context.root().join(&entry.path)`).
    pub entry: Entry,
    /// BLAKE3 of the content, for regular files.
    pub content: Option<Digest>,
}

/// What a COPY/ADD of some source patterns reads from the context.
#[derive(Clone, Debug)]
pub struct Selection {
    pub sources: Vec<SelectedSource>,
    /// `BLAKE3-derive_key(SELECTION_CONTEXT, ...)` over, for each source in order: its matched
    /// path, then each entry's relative path, type, permission bits, uid, gid, and its size and
    /// content hash (files), link target (symlinks) or device number (devices). Every
    /// variable-length field is length-prefixed (see [`DigestBuilder`]). No timestamps.
    pub digest: Digest,
}

impl Selection {
    pub fn entry_count(&self) -> usize {
        self.sources.iter().map(|s| s.entries.len()).sum()
    }
}

fn entry_from(path: PathBuf, abs: &Path, meta: &std::fs::Metadata) -> Result<Entry> {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_socket() {
        EntryKind::Socket
    } else if ft.is_char_device() {
        EntryKind::CharDevice
    } else {
        EntryKind::BlockDevice
    };
    let link_target = if kind == EntryKind::Symlink {
        Some(std::fs::read_link(abs).map_err(io_err(abs))?)
    } else {
        None
    };
    Ok(Entry {
        path,
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.size(),
        link_target,
        rdev: meta.rdev(),
        fp: Fingerprint {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            mode: meta.mode(),
        },
    })
}

struct Walker<'a> {
    matcher: &'a PatternMatcher,
    counters: &'a Counters,
}

impl Walker<'_> {
    /// Entries below `abs` (relative path `rel`), children before their descendants are
    /// sorted later. `excluded` marks a directory walked only because an exception might
    /// re-include something inside (BuildKit then tolerates unreadable directories).
    fn walk(&self, abs: &Path, rel: &Path, info: &MatchInfo, excluded: bool) -> Result<Vec<Entry>> {
        let rd = match std::fs::read_dir(abs) {
            Ok(rd) => rd,
            Err(e) if excluded && e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(io_err(abs)(e)),
        };
        self.counters.dirs_read.fetch_add(1, Ordering::Relaxed);
        let mut names = Vec::new();
        for d in rd {
            names.push(d.map_err(io_err(abs))?.file_name());
        }
        let nested: Vec<Vec<Entry>> = names
            .par_iter()
            .map(|name| -> Result<Vec<Entry>> {
                let abs_child = abs.join(name);
                let rel_child = rel.join(name);
                let meta = match std::fs::symlink_metadata(&abs_child) {
                    Ok(m) => m,
                    // vanished since the listing
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(io_err(&abs_child)(e)),
                };
                let rel_str = rel_child.to_string_lossy();
                let (excluded_here, child_info) = if self.matcher.is_empty() {
                    (false, MatchInfo::default())
                } else {
                    self.matcher.matches_using_parent_results(&rel_str, info)
                };
                let mut out = Vec::new();
                if excluded_here {
                    if meta.is_dir() && self.matcher.may_include_inside(&rel_str) {
                        let inner = self.walk(&abs_child, &rel_child, &child_info, true)?;
                        // an excluded directory is kept only as the parent of what an
                        // exception re-included (fsutil's lazily emitted parent dirs)
                        if !inner.is_empty() {
                            out.push(entry_from(rel_child, &abs_child, &meta)?);
                            out.extend(inner);
                        }
                    }
                } else {
                    let is_dir = meta.is_dir();
                    out.push(entry_from(rel_child.clone(), &abs_child, &meta)?);
                    if is_dir {
                        out.extend(self.walk(&abs_child, &rel_child, &child_info, false)?);
                    }
                }
                Ok(out)
            })
            .collect::<Result<_>>()?;
        Ok(nested.into_iter().flatten().collect())
    }
}

/// The part of a COPY source path inside the context: leading `/` and `..` that would climb
/// out are dropped (as `path.Join("/", src)`); empty for the root.
fn clean_source(p: &str) -> String {
    let c = clean(&format!("/{p}"));
    c.trim_start_matches('/').to_string()
}

impl Context {
    /// Walks `root` (symlinks in the path to it are resolved first, as BuildKit does),
    /// skipping what the `.dockerignore` `patterns` exclude. With `stat_cache`, loads the stat
    /// cache from that file (ignored if missing, corrupt or of another version) so unchanged
    /// files are not re-read; write it back with [`Context::save_stat_cache`]. Use one stat
    /// cache file per context directory.
    pub fn open<S: AsRef<str>>(
        root: &Path,
        patterns: &[S],
        stat_cache: Option<&Path>,
    ) -> Result<Self> {
        let matcher = PatternMatcher::new(patterns)?;
        let root = std::fs::canonicalize(root).map_err(io_err(root))?;
        let meta = std::fs::metadata(&root).map_err(io_err(&root))?;
        if !meta.is_dir() {
            return Err(Error::NotADirectory { path: root });
        }
        // the reference moment is taken before the walk (see statcache)
        let (old, load_status, reference_ns) = match stat_cache {
            None => (StatCache::default(), LoadStatus::Disabled, 0),
            Some(p) => {
                let dir = p
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let now = statcache::fs_now(dir).map_err(|source| Error::StatCacheWrite {
                    path: p.to_path_buf(),
                    source,
                })?;
                let (old, status) = StatCache::load(p);
                (old, status, now)
            }
        };
        let counters = Counters::default();
        let walker = Walker {
            matcher: &matcher,
            counters: &counters,
        };
        let mut entries = vec![entry_from(PathBuf::new(), &root, &meta)?];
        entries.extend(walker.walk(&root, Path::new(""), &MatchInfo::default(), false)?);
        entries.par_sort_unstable_by(|a, b| a.path.cmp(&b.path));
        let hashes = entries.iter().map(|_| OnceLock::new()).collect();
        Ok(Context {
            root,
            entries,
            hashes,
            stat_cache_path: stat_cache.map(Path::to_path_buf),
            old,
            reference_ns,
            load_status,
            counters,
        })
    }

    /// The canonical context root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every entry the walk kept, sorted by path, the root (empty path) first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn get(&self, path: &Path) -> Option<&Entry> {
        self.find(path).map(|i| &self.entries[i])
    }

    pub fn stat_cache_status(&self) -> &LoadStatus {
        &self.load_status
    }

    pub fn stats(&self) -> ContextStats {
        let c = &self.counters;
        ContextStats {
            entries: self.entries.len(),
            dirs_read: c.dirs_read.load(Ordering::Relaxed),
            files_read: c.files_read.load(Ordering::Relaxed),
            bytes_read: c.bytes_read.load(Ordering::Relaxed),
            files_reused: c.files_reused.load(Ordering::Relaxed),
        }
    }

    fn find(&self, path: &Path) -> Option<usize> {
        self.entries
            .binary_search_by(|e| e.path.as_path().cmp(path))
            .ok()
    }

    /// Index range of the descendants of entry `i`.
    fn descendants(&self, i: usize) -> std::ops::Range<usize> {
        let dir = &self.entries[i].path;
        let start = i + 1;
        let len = self.entries[start..].partition_point(|e| e.path.starts_with(dir));
        start..start + len
    }

    /// Resolves `path` inside the context, following symlinks in every component (and in the
    /// last one if `follow_final`); absolute link targets and `..` stay inside the root.
    fn resolve(&self, path: &Path, follow_final: bool, pattern: &str) -> Result<Option<usize>> {
        let mut stack: Vec<Component> = path.components().rev().collect();
        let mut cur = PathBuf::new();
        let mut links = 0;
        while let Some(c) = stack.pop() {
            match c {
                Component::ParentDir => {
                    cur.pop();
                }
                Component::Normal(name) => {
                    let cand = cur.join(name);
                    let Some(i) = self.find(&cand) else {
                        return Ok(None);
                    };
                    let e = &self.entries[i];
                    match &e.link_target {
                        Some(target) if !stack.is_empty() || follow_final => {
                            links += 1;
                            if links > MAX_LINKS {
                                return Err(Error::TooManyLinks {
                                    pattern: pattern.to_string(),
                                });
                            }
                            if target.is_absolute() {
                                cur = PathBuf::new();
                            }
                            stack.extend(target.components().rev());
                        }
                        _ => cur = cand,
                    }
                }
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        Ok(self.find(&cur))
    }

    /// Paths matched by one source pattern (before following a final symlink), sorted.
    fn expand(&self, pattern: &str) -> Result<Vec<PathBuf>> {
        let cleaned = clean_source(pattern);
        if !glob::has_wildcards(&cleaned) {
            return Ok(vec![PathBuf::from(cleaned)]);
        }
        glob::validate(&cleaned).map_err(|_| Error::BadSourcePattern {
            pattern: pattern.to_string(),
        })?;
        let comps: Vec<&str> = cleaned.split('/').collect();
        let first = comps
            .iter()
            .position(|c| glob::has_wildcards(c))
            .unwrap_or(0);
        let prefix = PathBuf::from(comps[..first].join("/"));
        // the literal prefix is resolved through symlinks; below it, matching walks the tree
        // without following them, as BuildKit's wildcard walk does
        let Some(base) = self.resolve(&prefix, true, pattern)? else {
            return Ok(Vec::new());
        };
        let mut candidates = vec![(prefix, base)];
        for comp in &comps[first..] {
            let mut next = Vec::new();
            for (lit, i) in candidates {
                if self.entries[i].kind != EntryKind::Dir {
                    continue;
                }
                let depth = self.entries[i].path.components().count() + 1;
                for j in self.descendants(i) {
                    let child = &self.entries[j].path;
                    if child.components().count() != depth {
                        continue;
                    }
                    let Some(name) = child.file_name() else {
                        continue;
                    };
                    let name = name.to_string_lossy();
                    let ok = glob::matches(comp, &name).map_err(|_| Error::BadSourcePattern {
                        pattern: pattern.to_string(),
                    })?;
                    if ok {
                        next.push((lit.join(&*name), j));
                    }
                }
            }
            candidates = next;
        }
        let mut out: Vec<PathBuf> = candidates.into_iter().map(|(l, _)| l).collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Resolves COPY/ADD source patterns (Go `filepath.Match` wildcards; `**` is not special)
    /// with BuildKit's rules: a matched symlink is followed, a directory contributes itself and
    /// everything below it (inner symlinks as themselves). Hashes the selected files (stat
    /// cache first, multi-threaded) and returns them with their digest. A pattern that matches
    /// nothing is a [`Error::NotFound`] naming it.
    pub fn select<S: AsRef<str>>(&self, patterns: &[S]) -> Result<Selection> {
        let mut picked: Vec<(String, PathBuf, usize, Vec<usize>)> = Vec::new();
        for p in patterns {
            let p = p.as_ref();
            let matched = self.expand(p)?;
            if matched.is_empty() {
                return Err(Error::NotFound {
                    pattern: p.to_string(),
                });
            }
            for lit in matched {
                let Some(ri) = self.resolve(&lit, true, p)? else {
                    return Err(Error::NotFound {
                        pattern: p.to_string(),
                    });
                };
                let mut idx = vec![ri];
                if self.entries[ri].kind == EntryKind::Dir {
                    idx.extend(self.descendants(ri));
                }
                picked.push((p.to_string(), lit, ri, idx));
            }
        }
        let mut files: Vec<usize> = picked
            .iter()
            .flat_map(|(_, _, _, idx)| idx.iter().copied())
            .filter(|&i| self.entries[i].kind == EntryKind::File)
            .collect();
        files.sort_unstable();
        files.dedup();
        self.hash_files(&files)?;

        let mut b = DigestBuilder::new(SELECTION_CONTEXT);
        b.u64(picked.len() as u64);
        let mut sources = Vec::with_capacity(picked.len());
        for (pattern, lit, ri, idx) in picked {
            let resolved = self.entries[ri].path.clone();
            b.bytes(lit.as_os_str().as_encoded_bytes());
            b.u64(idx.len() as u64);
            let mut entries = Vec::with_capacity(idx.len());
            for i in idx {
                let e = &self.entries[i];
                let rel = e
                    .path
                    .strip_prefix(&resolved)
                    .unwrap_or(&e.path)
                    .to_path_buf();
                let content = self.hashes[i].get().copied();
                b.bytes(rel.as_os_str().as_encoded_bytes())
                    .u8(e.kind.tag())
                    .u64(u64::from(e.mode))
                    .u64(u64::from(e.uid))
                    .u64(u64::from(e.gid));
                match e.kind {
                    EntryKind::File => {
                        b.u64(e.size).opt_digest(content.as_ref());
                    }
                    EntryKind::Symlink => {
                        let t = e.link_target.as_deref().unwrap_or(Path::new(""));
                        b.bytes(t.as_os_str().as_encoded_bytes());
                    }
                    EntryKind::CharDevice | EntryKind::BlockDevice => {
                        b.u64(e.rdev);
                    }
                    EntryKind::Dir | EntryKind::Fifo | EntryKind::Socket => {}
                }
                entries.push(SelectedEntry {
                    rel,
                    entry: e.clone(),
                    content,
                });
            }
            sources.push(SelectedSource {
                pattern,
                path: lit,
                resolved,
                entries,
            });
        }
        Ok(Selection {
            sources,
            digest: b.finish(),
        })
    }

    /// [`Context::select`] on tokio's blocking pool, for an [`Op::input_digest`](crate::Op)
    /// or a COPY op running on the async runtime.
    pub async fn select_blocking(
        self: std::sync::Arc<Self>,
        patterns: Vec<String>,
    ) -> Result<Selection> {
        match tokio::task::spawn_blocking(move || self.select(&patterns)).await {
            Ok(r) => r,
            Err(e) => Err(Error::Io {
                path: PathBuf::from("<context hashing task>"),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }

    /// Hashes the given file entries that are not hashed yet, in parallel.
    fn hash_files(&self, files: &[usize]) -> Result<()> {
        files.par_iter().try_for_each(|&i| -> Result<()> {
            if self.hashes[i].get().is_some() {
                return Ok(());
            }
            let e = &self.entries[i];
            let h = match self.old.lookup(&e.path, &e.fp) {
                Some(h) => {
                    self.counters.files_reused.fetch_add(1, Ordering::Relaxed);
                    h
                }
                None => self.hash_file(e)?,
            };
            let _ = self.hashes[i].set(h);
            Ok(())
        })
    }

    fn hash_file(&self, e: &Entry) -> Result<Digest> {
        let abs = self.root.join(&e.path);
        let mut f = std::fs::File::open(&abs).map_err(io_err(&abs))?;
        let mut hasher = blake3::Hasher::new();
        let mut total = 0u64;
        if e.size >= PARALLEL_HASH_MIN {
            let mut buf = vec![0u8; READ_BUF];
            loop {
                let n = read_full(&mut f, &mut buf).map_err(io_err(&abs))?;
                if n == 0 {
                    break;
                }
                hasher.update_rayon(&buf[..n]);
                total += n as u64;
            }
        } else {
            let mut buf = Vec::with_capacity(usize::try_from(e.size).unwrap_or(0));
            f.read_to_end(&mut buf).map_err(io_err(&abs))?;
            hasher.update(&buf);
            total = buf.len() as u64;
        }
        self.counters.files_read.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_read.fetch_add(total, Ordering::Relaxed);
        Ok(hasher.finalize().into())
    }

    /// Writes the stat cache (if one was given to [`Context::open`]) atomically: the hashes
    /// computed now plus still-trusted records of files that exist unchanged; records of
    /// files that vanished, changed or are racy are dropped.
    pub fn save_stat_cache(&self) -> Result<()> {
        let Some(path) = &self.stat_cache_path else {
            return Ok(());
        };
        let mut new = StatCache {
            reference_ns: self.reference_ns,
            ..Default::default()
        };
        for (i, e) in self.entries.iter().enumerate() {
            if e.kind != EntryKind::File {
                continue;
            }
            let hash = self.hashes[i]
                .get()
                .copied()
                .or_else(|| self.old.lookup(&e.path, &e.fp));
            if let Some(hash) = hash {
                new.records
                    .insert(e.path.clone(), Record { fp: e.fp, hash });
            }
        }
        new.save(path).map_err(|source| Error::StatCacheWrite {
            path: path.clone(),
            source,
        })
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
