//! COPY and ADD (and WORKDIR's mkdir): file operations into a fresh layer.
//!
//! The parent's snapshots are mounted as an overlay with a fresh upperdir in a private mount
//! namespace ([`crate::mountns`]); sources from another stage or image get a read-only overlay
//! of their own. The copy then follows BuildKit's `fsutil/copy` rules through path-safe [`Root`]
//! calls, and the upperdir (exactly the change) becomes the layer and its snapshot by rename.
//!
//! Destination rules (BuildKit's `prepareTargetDir`): the destination is resolved inside the
//! image, following its symlinks; a file (or symlink) source copied onto an existing directory
//! goes inside it under the source's base name; a directory source copies its *content*; missing
//! parents are created `0755` (owned by `--chown`'s user, else root); a destination written with
//! a trailing `/` is a directory. Entries keep their mode and times; ownership is `--chown`'s,
//! else the source's for stage/image sources and `0:0` for the build context; `--chmod` sets
//! the permission bits of everything copied (octal), or changes each entry's own bits
//! (symbolic, [`crate::chmod`]). An existing top-level destination directory keeps
//! its own metadata; nested directories take the source's.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use lade_cache::extract::{extract, ExtractOptions, WhiteoutMode};
use lade_cache::{Digest, LayerRecord, Store, TarOptions};
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{mknodat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{linkat, symlinkat};

use crate::chmod::Chmod;
use crate::glob;
use crate::mountns::{in_private_mount_ns, mount_overlay};
use crate::rootfs::{clean, join, set_meta, split, Kind, Meta, Root};
use crate::{users, Error, Result};

/// One entry of a build-context source: its path relative to the copied source (empty for the
/// source itself) and relative to the context root.
#[derive(Debug, Clone)]
pub struct ContextEntry {
    pub rel: PathBuf,
    pub path: PathBuf,
}

/// Content of an inline file.
#[derive(Debug, Clone)]
pub enum FileData {
    Bytes(Vec<u8>),
    /// A host file (a download in the store's temp dir).
    Path(PathBuf),
}

/// What one COPY/ADD source is.
#[derive(Debug, Clone)]
pub enum CopyItem {
    /// A source pattern already matched in the build context (`.dockerignore` applied).
    Context {
        /// The context directory.
        root: PathBuf,
        /// The matched path before following a final symlink (its base name names a file
        /// copied into a directory).
        matched: PathBuf,
        /// The entries to copy, the source itself first, parents before children.
        entries: Vec<ContextEntry>,
        /// `--parents`: the path recreated under the destination (the matched path, or what
        /// follows a `/./` pivot in the pattern).
        keep: Option<PathBuf>,
    },
    /// A pattern (Go wildcards) matched at run time in source view `view` (another stage or an
    /// image, see [`CopyOp::sources`]).
    Layers {
        view: usize,
        pattern: String,
        /// `--parents`: the in-root prefix not recreated (before a `/./` pivot; `/` for none).
        pivot: Option<String>,
    },
    /// An inline file: a heredoc or a downloaded URL.
    File {
        name: String,
        data: FileData,
        mode: u32,
        mtime: Option<i64>,
    },
}

/// `--exclude`: true for a path (relative to the copied source) that must not be copied.
#[derive(Clone)]
pub struct Exclude(pub std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for Exclude {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exclude(..)")
    }
}

/// A COPY/ADD (or WORKDIR mkdir) to perform.
#[derive(Debug, Clone, Default)]
pub struct CopyOp {
    pub items: Vec<CopyItem>,
    /// Absolute destination as the Dockerfile gives it after WORKDIR (a trailing `/` kept).
    pub dest: String,
    /// `--chown` as written (names resolved in the destination image).
    pub chown: Option<String>,
    /// `--chmod`, octal or symbolic, applied to each copied entry.
    pub chmod: Option<Chmod>,
    /// ADD: extract local tar archives instead of copying them.
    pub unpack: bool,
    /// Source views: layer stacks (bottom first) of other stages or images, mounted read-only.
    pub sources: Vec<Vec<Digest>>,
    /// WORKDIR: only create `dest` (with `mkdir_owner` resolved like `--chown`).
    pub mkdir_only: bool,
    /// `--exclude` for sources from other stages or images (context sources arrive filtered).
    pub exclude: Option<Exclude>,
}

/// Runs `op` on top of the layers `parent` (bottom first) and returns the new layer.
pub fn run_copy(store: &Store, parent: &[Digest], op: &CopyOp) -> Result<LayerRecord> {
    let lowers = store.ensure_snapshots(parent)?;
    let mut views = Vec::new();
    for s in &op.sources {
        views.push(store.ensure_snapshots(s)?);
    }
    let tmp = store.temp_dir("copy-")?;
    let upper = tmp.path().join("upper");
    let work = tmp.path().join("work");
    let empty = tmp.path().join("empty");
    let mnt = tmp.path().join("root");
    for d in [&upper, &work, &empty, &mnt] {
        std::fs::create_dir(d).map_err(crate::io_err("create", d))?;
    }
    let view_dirs: Vec<PathBuf> = (0..views.len())
        .map(|i| tmp.path().join(format!("src{i}")))
        .collect();
    for d in &view_dirs {
        std::fs::create_dir(d).map_err(crate::io_err("create", d))?;
    }
    in_private_mount_ns(|| {
        mount_overlay(&mnt, &lowers, Some((&upper, &work)), &empty)?;
        let mut srcs = Vec::new();
        for (v, d) in views.iter().zip(&view_dirs) {
            mount_overlay(d, v, None, &empty)?;
            srcs.push(Root::open(d)?);
        }
        let dst = Root::open(&mnt)?;
        Copier::new(&dst, op)?.run(&srcs)
    })?;
    let rec = store.commit_upperdir(&upper, &TarOptions::default())?;
    drop(tmp);
    Ok(rec)
}

struct Copier<'a> {
    dst: &'a Root,
    op: &'a CopyOp,
    owner: Option<(u32, u32)>,
    /// Hard links within the source being copied: (dev, inode) -> destination of the first copy.
    inodes: HashMap<(u64, u64), String>,
}

/// Where one matched source is read from.
struct Source<'a> {
    root: Option<&'a Root>,
    /// The in-root path matched, before following a final symlink.
    matched: String,
    /// `(source path, path relative to the source)`, the source itself first.
    entries: Vec<(String, String)>,
    /// Files from the build context are owned by root unless `--chown`.
    context: bool,
    /// `--parents`: the path (relative) recreated under the destination.
    keep: Option<String>,
}

impl<'a> Copier<'a> {
    fn new(dst: &'a Root, op: &'a CopyOp) -> Result<Self> {
        let owner = match &op.chown {
            Some(c) => Some(users::resolve(c, dst)?),
            None => None,
        };
        Ok(Copier {
            dst,
            op,
            owner,
            inodes: HashMap::new(),
        })
    }

    fn run(mut self, views: &[Root]) -> Result<()> {
        let dest = &self.op.dest;
        let dir_dest = dest.ends_with('/');
        if self.op.mkdir_only {
            return self.dst.mkdir_all(dest, 0o755, self.owner, None);
        }
        // BuildKit's ensureDstPath: the destination directory (trailing slash) or its parent
        let ensure = if dir_dest {
            clean(dest)
        } else {
            split(&clean(dest)).map_or("/".to_string(), |(p, _)| p.to_string())
        };
        // created before the first source is copied, not when no wildcard matched anything
        // (BuildKit's copy makes it per source; an empty wildcard match copies nothing)
        let mut ensured = false;
        let mut ensure_dest = |this: &Self| -> Result<()> {
            if !ensured {
                this.dst.mkdir_all(&ensure, 0o755, this.owner, None)?;
                ensured = true;
            }
            Ok(())
        };
        for item in &self.op.items {
            match item {
                CopyItem::Context {
                    root,
                    matched,
                    entries,
                    keep,
                } => {
                    let src_root = Root::open(root)?;
                    let src = Source {
                        root: Some(&src_root),
                        matched: format!("/{}", matched.display()),
                        entries: entries
                            .iter()
                            .map(|e| {
                                (
                                    format!("/{}", e.path.display()),
                                    e.rel.to_string_lossy().into_owned(),
                                )
                            })
                            .collect(),
                        context: true,
                        keep: keep.as_ref().map(|k| k.to_string_lossy().into_owned()),
                    };
                    ensure_dest(&self)?;
                    if self.op.unpack && self.try_unpack(&src_root, &src)? {
                        continue;
                    }
                    self.copy_source(&src)?;
                }
                CopyItem::Layers {
                    view,
                    pattern,
                    pivot,
                } => {
                    let root = views
                        .get(*view)
                        .ok_or_else(|| Error::Invalid(format!("no source view {view}")))?;
                    for matched in expand(root, pattern)? {
                        let excluded =
                            |rel: &str| self.op.exclude.as_ref().is_some_and(|x| (x.0)(rel));
                        let base = split(&matched).map_or("", |(_, b)| b);
                        if excluded(base) {
                            continue;
                        }
                        let followed = root.resolve(&matched)?;
                        if root.lstat(&followed)?.is_none() {
                            return Err(Error::NotFound(pattern.clone()));
                        }
                        ensure_dest(&self)?;
                        let mut entries = Vec::new();
                        walk(root, &followed, "", &mut entries)?;
                        entries.retain(|(_, rel)| rel.is_empty() || !excluded(rel));
                        let keep = pivot.as_ref().map(|p| {
                            let p = clean(p);
                            match matched.strip_prefix(p.as_str()) {
                                Some(r) if p != "/" && (r.is_empty() || r.starts_with('/')) => {
                                    r.trim_start_matches('/').to_string()
                                }
                                _ => matched.trim_start_matches('/').to_string(),
                            }
                        });
                        self.copy_source(&Source {
                            root: Some(root),
                            matched,
                            entries,
                            context: false,
                            keep,
                        })?;
                    }
                }
                CopyItem::File {
                    name,
                    data,
                    mode,
                    mtime,
                } => {
                    ensure_dest(&self)?;
                    self.copy_inline(name, data, *mode, *mtime)?
                }
            }
        }
        Ok(())
    }

    /// BuildKit's `prepareTargetDir`: where the source lands, creating its parent.
    fn target_for(&self, src_kind: Kind, matched: &str) -> Result<String> {
        let resolved = self.dst.resolve(&self.op.dest)?;
        let dest_meta = self.dst.lstat(&resolved)?;
        let is_dir_dest = dest_meta.is_some_and(|m| m.kind == Kind::Dir);
        let mut target = resolved;
        if src_kind != Kind::Dir && is_dir_dest {
            let base = split(&clean(matched)).map_or("", |(_, b)| b).to_string();
            target = join(&target, &base);
        }
        if src_kind == Kind::Dir && dest_meta.is_none() {
            self.dst.mkdir_all(&target, 0o755, self.owner, None)?;
        } else if let Some((parent, _)) = split(&target) {
            self.dst.mkdir_all(parent, 0o755, self.owner, None)?;
        }
        Ok(target)
    }

    fn copy_source(&mut self, src: &Source<'_>) -> Result<()> {
        let Some(root) = src.root else {
            return Ok(());
        };
        let Some((top_path, _)) = src.entries.first() else {
            return Err(Error::NotFound(src.matched.clone()));
        };
        let top = root
            .lstat(top_path)?
            .ok_or_else(|| Error::NotFound(src.matched.clone()))?;
        let target = match src.keep.as_deref().filter(|k| !k.is_empty()) {
            Some(keep) => {
                // --parents: the matched path is recreated under the destination directory
                let dest = self.dst.resolve(&self.op.dest)?;
                let target = join(&dest, keep);
                let parent = split(&target).map_or("/".to_string(), |(p, _)| p.to_string());
                self.dst.mkdir_all(&parent, 0o755, self.owner, None)?;
                target
            }
            None => self.target_for(top.kind, &src.matched)?,
        };
        // hard links are kept within one source, not across sources (BuildKit copies each
        // source with a copier of its own)
        self.inodes.clear();
        for (i, (path, rel)) in src.entries.iter().enumerate() {
            let meta = root
                .lstat(path)?
                .ok_or_else(|| Error::NotFound(path.clone()))?;
            let to = if rel.is_empty() {
                target.clone()
            } else {
                join(&target, rel)
            };
            let owner = self.owner.or(if src.context {
                Some((0, 0))
            } else {
                Some((meta.uid, meta.gid))
            });
            self.copy_entry(root, path, &meta, &to, owner, i == 0)?;
        }
        Ok(())
    }

    fn copy_entry(
        &mut self,
        root: &Root,
        path: &str,
        meta: &Meta,
        to: &str,
        owner: Option<(u32, u32)>,
        top: bool,
    ) -> Result<()> {
        let mode = Some(
            self.op
                .chmod
                .as_ref()
                .map_or(meta.perm(), |c| c.apply(meta.mode, meta.kind == Kind::Dir)),
        );
        let times = Some(meta.mtime);
        if meta.kind == Kind::Dir {
            let existing = self.dst.lstat(to)?;
            // an existing top-level destination keeps its metadata (BuildKit)
            if top && existing.is_some_and(|m| m.kind == Kind::Dir) {
                return Ok(());
            }
            let (parent, name) = self.dst.parent(to)?;
            match existing {
                Some(m) if m.kind == Kind::Dir => {}
                Some(_) => {
                    return Err(Error::Invalid(format!(
                        "cannot copy directory {path} onto non-directory {to}"
                    )))
                }
                None => {
                    nix::sys::stat::mkdirat(
                        &parent,
                        name.as_str(),
                        Mode::from_bits_truncate(0o700),
                    )
                    .map_err(|e| fs_errno("create directory", to, e))?;
                }
            }
            set_meta(&parent, &name, to, mode, owner, None, false)?;
            return set_time(&parent, &name, to, meta);
        }
        let (parent, name) = self.dst.parent(to)?;
        match meta.kind {
            Kind::Dir => Ok(()),
            Kind::File => {
                self.dst.remove_entry(&parent, &name, to)?;
                if meta.nlink > 1 {
                    if let Some(first) = self.inodes.get(&(meta.dev, meta.ino)).cloned() {
                        let (fp, fname) = self.dst.parent(&first)?;
                        return linkat(
                            &fp,
                            fname.as_str(),
                            &parent,
                            name.as_str(),
                            nix::fcntl::AtFlags::empty(),
                        )
                        .map_err(|e| fs_errno("link", to, e));
                    }
                    self.inodes.insert((meta.dev, meta.ino), to.to_string());
                }
                let mut src = root.open_file(path)?;
                let mut out = create_file(&parent, &name, to)?;
                std::io::copy(&mut src, &mut out).map_err(crate::fs_err("copy into", to))?;
                copy_xattrs(&src, &out);
                drop(out);
                set_meta(&parent, &name, to, mode, owner, times, false)
            }
            Kind::Symlink => {
                self.dst.remove_entry(&parent, &name, to)?;
                let target = root.readlink(path)?;
                symlinkat(target.as_path(), &parent, name.as_str())
                    .map_err(|e| fs_errno("create symlink", to, e))?;
                set_meta(&parent, &name, to, None, owner, times, true)
            }
            Kind::Other => {
                self.dst.remove_entry(&parent, &name, to)?;
                let kind = SFlag::from_bits_truncate(meta.mode & SFlag::S_IFMT.bits());
                mknodat(
                    &parent,
                    name.as_str(),
                    kind,
                    Mode::from_bits_truncate(meta.perm()),
                    meta.rdev,
                )
                .map_err(|e| fs_errno("create special file", to, e))?;
                set_meta(&parent, &name, to, mode, owner, times, false)
            }
        }
    }

    fn copy_inline(
        &mut self,
        name: &str,
        data: &FileData,
        mode: u32,
        mtime: Option<i64>,
    ) -> Result<()> {
        let target = self.target_for(Kind::File, &format!("/{name}"))?;
        let (parent, leaf) = self.dst.parent(&target)?;
        self.dst.remove_entry(&parent, &leaf, &target)?;
        let mut out = create_file(&parent, &leaf, &target)?;
        match data {
            FileData::Bytes(b) => {
                std::io::Write::write_all(&mut out, b).map_err(crate::fs_err("write", &target))?
            }
            FileData::Path(p) => {
                let mut f = File::open(p).map_err(crate::io_err("open", p))?;
                std::io::copy(&mut f, &mut out).map_err(crate::fs_err("write", &target))?;
            }
        }
        drop(out);
        let owner = self.owner.or(Some((0, 0)));
        let time = mtime.map(|s| TimeSpec::new(s, 0));
        set_meta(
            &parent,
            &leaf,
            &target,
            Some(
                self.op
                    .chmod
                    .as_ref()
                    .map_or(mode, |c| c.apply(mode, false)),
            ),
            owner,
            time,
            false,
        )
    }

    /// ADD of a local archive: extracts it into the destination directory (modes from the
    /// archive, owners from `--chown` or else the archive, whiteouts applied) and returns true;
    /// false when the source is not a tar archive (plain or compressed).
    fn try_unpack(&mut self, root: &Root, src: &Source<'_>) -> Result<bool> {
        let Some((path, _)) = src.entries.first() else {
            return Ok(false);
        };
        let Some(meta) = root.lstat(path)? else {
            return Ok(false);
        };
        if meta.kind != Kind::File || !is_archive(root.open_file(path)?) {
            return Ok(false);
        }
        let dest = self.dst.resolve(&self.op.dest)?;
        self.dst.mkdir_all(&dest, 0o755, self.owner, None)?;
        let host = self.dst.host_path().join(dest.trim_start_matches('/'));
        let reader = decompress(root.open_file(path)?)?;
        // `--chown` owns every extracted entry (BuildKit v0.23+, moby/buildkit#5987); without it
        // the archive's owners are kept. `--chmod` does not apply to extracted entries.
        let opts = ExtractOptions {
            whiteouts: WhiteoutMode::Apply,
            what: format!("archive {}", src.matched),
            owner: self.owner,
            ..Default::default()
        };
        extract(reader, &host, &opts)?;
        Ok(true)
    }
}

fn fs_errno(what: &'static str, path: &str, e: Errno) -> Error {
    Error::Fs {
        what,
        path: path.to_string(),
        source: std::io::Error::from(e),
    }
}

fn create_file(parent: &OwnedFd, name: &str, path: &str) -> Result<File> {
    let fd = openat(
        parent,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| fs_errno("create", path, e))?;
    Ok(File::from(fd))
}

fn set_time(parent: &impl AsFd, name: &str, path: &str, meta: &Meta) -> Result<()> {
    set_meta(parent, name, path, None, None, Some(meta.mtime), false)
}

/// Copies extended attributes (file capabilities, ...) best effort, as BuildKit does.
fn copy_xattrs(src: &File, dst: &File) {
    use xattr::FileExt;
    let Ok(names) = src.list_xattr() else {
        return;
    };
    for n in names {
        if n.to_string_lossy().starts_with("trusted.overlay.") {
            continue;
        }
        if let Ok(Some(v)) = src.get_xattr(&n) {
            let _ = dst.set_xattr(&n, &v);
        }
    }
}

/// Paths in `root` matching `pattern` (Go `filepath.Match` per component, literal prefix
/// resolved through symlinks), sorted; a pattern without wildcards is returned cleaned (the
/// copy then fails if it does not exist). A wildcard that matches nothing gives an empty list,
/// copied as nothing: BuildKit's `AllowEmptyWildcard`, set on every Dockerfile COPY/ADD source.
pub fn expand(root: &Root, pattern: &str) -> Result<Vec<String>> {
    let cleaned = clean(pattern);
    if !glob::has_wildcards(&cleaned) {
        return Ok(vec![cleaned]);
    }
    glob::validate(&cleaned)
        .map_err(|_| Error::Invalid(format!("source pattern {pattern:?} is malformed")))?;
    let comps: Vec<&str> = cleaned.split('/').filter(|c| !c.is_empty()).collect();
    let first = comps
        .iter()
        .position(|c| glob::has_wildcards(c))
        .unwrap_or(0);
    let mut cands = vec![format!("/{}", comps[..first].join("/"))];
    for comp in &comps[first..] {
        let mut next = Vec::new();
        for c in cands {
            let resolved = root.resolve(&c)?;
            if !root.lstat(&resolved)?.is_some_and(|m| m.kind == Kind::Dir) {
                continue;
            }
            for name in root.read_dir(&resolved)? {
                let name = name.to_string_lossy().into_owned();
                let ok = glob::matches(comp, &name).map_err(|_| {
                    Error::Invalid(format!("source pattern {pattern:?} is malformed"))
                })?;
                if ok {
                    next.push(join(&c, &name));
                }
            }
        }
        cands = next;
    }
    cands.sort();
    cands.dedup();
    Ok(cands)
}

/// Every entry below `path` (itself first, parents before children, symlinks not followed).
fn walk(root: &Root, path: &str, rel: &str, out: &mut Vec<(String, String)>) -> Result<()> {
    out.push((path.to_string(), rel.to_string()));
    if root.lstat(path)?.is_some_and(|m| m.kind == Kind::Dir) {
        for name in root.read_dir(path)? {
            let name = name.to_string_lossy().into_owned();
            let child = join(path, &name);
            let crel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            walk(root, &child, &crel, out)?;
        }
    }
    Ok(())
}

/// Compression of an archive stream, from its first bytes.
fn sniff(head: &[u8]) -> &'static str {
    if head.starts_with(&[0x1f, 0x8b]) {
        "gzip"
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "zstd"
    } else if head.starts_with(b"BZh") {
        "bzip2"
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        "xz"
    } else {
        "none"
    }
}

/// Whether a stream starting with `head` (its first 512 bytes, or all of it when shorter) is an
/// archive as the docker CLI tells a build context on stdin from a Dockerfile: compressed
/// (gzip, bzip2, xz, zstd) or a tar with the `ustar` magic at offset 257.
pub fn looks_like_archive(head: &[u8]) -> bool {
    sniff(head) != "none" || head.get(257..262) == Some(b"ustar")
}

/// A decompressing reader for a (possibly compressed) archive.
pub fn decompress<R: Read + Send + 'static>(f: R) -> Result<Box<dyn Read + Send>> {
    let mut br = std::io::BufReader::with_capacity(1 << 20, f);
    let head = std::io::BufRead::fill_buf(&mut br)
        .map_err(|e| Error::Invalid(format!("cannot read archive: {e}")))?
        .to_vec();
    Ok(match sniff(&head) {
        "gzip" => Box::new(flate2::read::MultiGzDecoder::new(br)),
        "zstd" => Box::new(
            zstd::stream::read::Decoder::with_buffer(br)
                .map_err(|e| Error::Invalid(format!("cannot read zstd archive: {e}")))?,
        ),
        "bzip2" => Box::new(bzip2::read::MultiBzDecoder::new(br)),
        "xz" => Box::new(liblzma::read::XzDecoder::new_multi_decoder(br)),
        _ => Box::new(br),
    })
}

/// BuildKit's `isArchivePath`: the (decompressed) stream starts with a valid tar header.
fn is_archive(f: File) -> bool {
    let Ok(mut r) = decompress(f) else {
        return false;
    };
    let mut block = [0u8; 512];
    let mut n = 0;
    while n < 512 {
        match r.read(&mut block[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return false,
        }
    }
    if n < 512 || block.iter().all(|b| *b == 0) {
        return false;
    }
    // header checksum: sum of the header bytes with the checksum field read as spaces
    let field = &block[148..156];
    let digits: String = field
        .iter()
        .take_while(|b| **b != 0 && **b != b' ')
        .map(|b| *b as char)
        .collect();
    let Ok(want) = u32::from_str_radix(digits.trim(), 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == want
}

/// True if `path` on the host is a tar archive (plain or compressed).
pub fn is_archive_file(path: &Path) -> bool {
    File::open(path).map(is_archive).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_told_from_dockerfiles_by_magic() {
        for head in [
            &[0x1f, 0x8b, 8, 0][..],
            b"BZh91AY",
            &[0xfd, b'7', b'z', b'X', b'Z', 0, 0],
            &[0x28, 0xb5, 0x2f, 0xfd, 0],
        ] {
            assert!(looks_like_archive(head), "{head:?}");
        }
        let mut tar = vec![0u8; 512];
        tar[..10].copy_from_slice(b"Dockerfile");
        tar[257..263].copy_from_slice(b"ustar\0");
        assert!(looks_like_archive(&tar));
        tar[257..265].copy_from_slice(b"ustar  \0");
        assert!(looks_like_archive(&tar));
        assert!(!looks_like_archive(b"FROM busybox\nRUN true\n"));
        assert!(!looks_like_archive(b""));
        // a Dockerfile that merely mentions ustar elsewhere stays a Dockerfile
        let mut df = b"FROM x\n".repeat(60);
        df.extend_from_slice(b"# ustar");
        assert!(!looks_like_archive(&df[..df.len().min(512)]));
    }
}
