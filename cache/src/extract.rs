//! Path-safe tar extraction, shared by snapshot creation and "apply a layer onto a tree".
//!
//! Every entry is created relative to a directory fd obtained with
//! `openat2(root, parent, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: the kernel resolves `..`,
//! absolute names and symlinks (including absolute symlink targets such as `etc -> /etc`) as if
//! `root` were `/`, so nothing can be written outside the extraction root whatever the archive
//! says. The final component is created with `*at` syscalls that never follow it
//! (`O_NOFOLLOW|O_EXCL`, `AT_SYMLINK_NOFOLLOW`, `linkat` without `AT_SYMLINK_FOLLOW`). Names are
//! cleaned lexically first only to find the parent/leaf split; safety does not rest on that.
//!
//! Three whiteout modes: [`WhiteoutMode::Overlay`] (a layer unpacked alone as an overlayfs lower
//! layer: `.wh.x` becomes a `0:0` char device, `.wh..wh..opq` the overlay opaque xattr in the
//! namespace the snapshot will be mounted with, see [`OverlayXattrs`]), [`WhiteoutMode::Apply`]
//! (a layer applied onto an existing tree: `.wh.x` deletes the in-root `x`, `.wh..wh..opq`
//! deletes what earlier layers put in the directory) and [`WhiteoutMode::Keep`] (an archive
//! that is no layer, e.g. a build context: `.wh.` names are ordinary files, as docker keeps
//! them).
//!
//! Directories get their mode and times from the archive only once everything is in them, so
//! that a directory without owner write or search permission (`0555`, `0311`) can still be
//! filled by an unprivileged extraction: the last entry of a path wins (as docker's), fixes go
//! deepest first (a parent keeps its search permission until its children are done), each
//! through a descriptor opened in the root without following the last component, and only
//! while it is still the directory the entry made (same device and inode).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag, AT_FDCWD};
use nix::sys::stat::{
    fchmod, fchmodat, fstat, fstatat, futimens, makedev, mkdirat, mknodat, utimensat,
    FchmodatFlags, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::digest::LimitedReader;
use crate::error::{Error, IoContext, Result, SysContext};

/// What `.wh.` entries mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Unpack one layer alone as an overlayfs lowerdir (whiteouts kept, in overlay form).
    Overlay,
    /// Apply the layer onto an existing tree (whiteouts delete).
    Apply,
    /// Not a layer: `.wh.` entries are extracted as the files they are.
    Keep,
}

/// Where overlayfs keeps its metadata (here: the opaque-directory mark): `trusted.overlay.*`
/// for a mount made by real root, `user.overlay.*` for one with the `userxattr` option, which is
/// how an unprivileged user namespace mounts it (and the only namespace such a user can write).
/// A snapshot must carry the namespace of the mounts it will be a lowerdir of: the runtime uses
/// a user namespace (and `userxattr`) exactly when lade does not run as root, so the store picks
/// [`OverlayXattrs::for_euid`] of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayXattrs {
    Trusted,
    User,
}

/// Prefixes of the xattrs overlayfs owns, in either namespace: never taken from an archive,
/// never written to a layer tar.
pub const OVERLAY_XATTR_PREFIXES: [&str; 2] = ["trusted.overlay.", "user.overlay."];

/// Whether `name` is an overlayfs xattr (of either namespace).
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    OVERLAY_XATTR_PREFIXES
        .iter()
        .any(|p| name.starts_with(p.as_bytes()))
}

impl OverlayXattrs {
    /// `trusted.*` for root, `user.*` for anyone else.
    pub fn for_euid(euid: u32) -> Self {
        if euid == 0 {
            OverlayXattrs::Trusted
        } else {
            OverlayXattrs::User
        }
    }

    /// [`OverlayXattrs::for_euid`] of this process.
    pub fn current() -> Self {
        Self::for_euid(nix::unistd::geteuid().as_raw())
    }

    /// The opaque-directory xattr (`y` marks a directory that hides the layers below).
    pub fn opaque(self) -> &'static str {
        match self {
            OverlayXattrs::Trusted => "trusted.overlay.opaque",
            OverlayXattrs::User => "user.overlay.opaque",
        }
    }
}

/// Default cap on the uncompressed bytes of one layer or archive (64 GiB).
pub const DEFAULT_MAX_BYTES: u64 = 64 << 30;

/// Options of [`extract`].
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    pub whiteouts: WhiteoutMode,
    /// Refuse the tar once more than this many uncompressed bytes were read (decompression bomb).
    pub max_bytes: u64,
    /// Apply uid/gid from the archive (needs root or a user namespace mapping them). When false,
    /// files belong to the extracting user.
    pub same_owner: bool,
    /// Every entry of the archive gets this `uid:gid` instead of the one it records (`ADD
    /// --chown` of a local archive, BuildKit v0.23+); directories the extraction creates
    /// because entries need them keep the extracting user.
    pub owner: Option<(u32, u32)>,
    /// Restore xattrs from PAX `SCHILY.xattr.*` records (overlayfs's own, `trusted.overlay.*`
    /// and `user.overlay.*`, never: an archive cannot forge whiteouts that way).
    pub xattrs: bool,
    /// Overlay mode: the namespace of the opaque-directory xattr.
    pub overlay_xattrs: OverlayXattrs,
    /// Not root: device nodes (which only root may create) are skipped instead of failing
    /// the extraction, as containers/storage does in a user namespace. A sandbox mounts its
    /// own `/dev`, where image device nodes usually are.
    pub skip_devices_without_privilege: bool,
    /// Label used in error messages (e.g. the layer digest).
    pub what: String,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        Self {
            whiteouts: WhiteoutMode::Apply,
            max_bytes: DEFAULT_MAX_BYTES,
            same_owner: nix::unistd::geteuid().is_root(),
            owner: None,
            xattrs: true,
            overlay_xattrs: OverlayXattrs::current(),
            skip_devices_without_privilege: !nix::unistd::geteuid().is_root(),
            what: "archive".to_string(),
        }
    }
}

/// Counts of what [`extract`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractStats {
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// Extracts an uncompressed tar stream into `dest` (which must exist), see the module docs.
/// On error the tree may hold part of the archive: callers extract into a temp directory.
pub fn extract<R: Read>(tar: R, dest: &Path, opts: &ExtractOptions) -> Result<ExtractStats> {
    let root: OwnedFd = openat(
        AT_FDCWD,
        dest,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::Io {
        what: "open extraction root",
        path: dest.to_path_buf(),
        source: e.into(),
    })?;
    let limited = LimitedReader::new(tar, opts.max_bytes, format!("uncompressed {}", opts.what));
    let mut archive = tar::Archive::new(limited);
    let mut x = Extractor {
        root,
        opts,
        cache: None,
        dirs: BTreeMap::new(),
        created: HashSet::new(),
        buf: vec![0u8; 256 * 1024],
        stats: ExtractStats::default(),
    };
    let entries = archive
        .entries()
        .map_err(|e| Error::bad_tar(&opts.what, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::bad_tar(&opts.what, e))?;
        x.entry(&mut entry)?;
        x.stats.entries += 1;
    }
    // Directory modes and times last, deepest first, so creating children neither needs
    // write permission the archive takes away nor changes their times, and a parent is still
    // searchable while its children are fixed.
    let mut dirs: Vec<DirFix> = std::mem::take(&mut x.dirs).into_values().collect();
    // (stable: same depth stays in path order)
    dirs.sort_by(|a, b| {
        let depth = |d: &DirFix| d.path.iter().filter(|c| **c == b'/').count();
        depth(b).cmp(&depth(a))
    });
    for d in &dirs {
        let (parent, name) = split(&d.path);
        let Ok(p) = x.resolve(&parent, false) else {
            continue;
        };
        // Still the directory the entry made (a later entry may have replaced it, or removed
        // it and made another there): never through a link, never another inode.
        let Ok(fd) = openat2(
            &*p,
            name,
            how(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW),
        ) else {
            continue;
        };
        match fstat(&fd) {
            Ok(st) if (st.st_dev, st.st_ino) == d.id => {}
            _ => continue,
        }
        if let Some(mode) = d.mode {
            fchmod(&fd, Mode::from_bits_truncate(mode)).sys("chmod", &show(&d.path))?;
        }
        let t = TimeSpec::new(d.mtime, 0);
        let _ = futimens(&fd, &t, &t);
    }
    Ok(x.stats)
}

struct Extractor<'a> {
    root: OwnedFd,
    opts: &'a ExtractOptions,
    /// Last resolved parent directory (entries of one directory are usually adjacent).
    cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    /// By path: the last directory entry of a path wins; removing a path forgets the fixes of
    /// it and below (a directory made there again may reuse a freed inode number).
    dirs: BTreeMap<Vec<u8>, DirFix>,
    /// Apply mode: paths this layer created (kept by an opaque whiteout).
    created: HashSet<Vec<u8>>,
    buf: Vec<u8>,
    stats: ExtractStats,
}

/// What is set on a directory once the whole archive is in.
struct DirFix {
    path: Vec<u8>,
    mtime: i64,
    /// The archive's mode, when it lacks some owner permission (set at the end).
    mode: Option<u32>,
    /// `(st_dev, st_ino)` of the directory the entry made: the fix is for it alone.
    id: (u64, u64),
}

/// Lexically cleans a tar name: drops empty and `.` components, `..` pops (never above root).
fn clean(name: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in name.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join(&b'/')
}

fn split(path: &[u8]) -> (Vec<u8>, &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (path[..i].to_vec(), &path[i + 1..]),
        None => (Vec::new(), path),
    }
}

/// `parent/name` (`name` alone at the root).
fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Extractor<'_> {
    fn bad(&self, entry: &[u8], reason: impl Into<String>) -> Error {
        Error::BadEntry {
            entry: format!("{}: {}", self.opts.what, show(entry)),
            reason: reason.into(),
        }
    }

    /// Opens directory `parent` (relative, cleaned) inside the root; creates missing directories
    /// when `create`.
    fn resolve(&mut self, parent: &[u8], create: bool) -> Result<Rc<OwnedFd>> {
        if let Some((p, fd)) = &self.cache {
            if p == parent {
                return Ok(Rc::clone(fd));
            }
        }
        let path: &[u8] = if parent.is_empty() { b"." } else { parent };
        let fd = match openat2(&self.root, path, how(OFlag::O_RDONLY | OFlag::O_DIRECTORY)) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                // Create missing components one by one, each resolved in the root.
                let comps: Vec<&[u8]> = parent.split(|b| *b == b'/').collect();
                let mut cur: Vec<u8> = Vec::new();
                let mut fd = self.root.try_clone().ctx("dup root fd", show(parent))?;
                for c in comps {
                    match openat2(
                        &fd,
                        c,
                        how(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW),
                    ) {
                        Ok(next) => fd = next,
                        Err(Errno::ENOENT) => {
                            mkdirat(&fd, c, Mode::from_bits_truncate(0o755))
                                .or_else(|e| if e == Errno::EEXIST { Ok(()) } else { Err(e) })
                                .sys("create directory", &show(&cur))?;
                            fd = openat2(
                                &fd,
                                c,
                                how(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW),
                            )
                            .sys("open created directory", &show(c))?;
                        }
                        Err(Errno::ELOOP) => {
                            // A symlink: resolve it from the root (it may point anywhere in it).
                            let mut p = cur.clone();
                            if !p.is_empty() {
                                p.push(b'/');
                            }
                            p.extend_from_slice(c);
                            fd = openat2(
                                &self.root,
                                &p[..],
                                how(OFlag::O_RDONLY | OFlag::O_DIRECTORY),
                            )
                            .sys("open directory (through symlink)", &show(&p))?;
                        }
                        Err(e) => return Err(e).sys("open directory", &show(parent)),
                    }
                    if !cur.is_empty() {
                        cur.push(b'/');
                    }
                    cur.extend_from_slice(c);
                }
                fd
            }
            Err(e) => return Err(e).sys("open directory", &show(parent)),
        };
        let fd = Rc::new(fd);
        self.cache = Some((parent.to_vec(), Rc::clone(&fd)));
        Ok(fd)
    }

    /// Removes `name` in `dir` (`path` in the root) if present (recursively for a directory),
    /// unless it is a directory and `keep_dir`. Returns whether a directory was kept.
    fn remove(&mut self, dir: &OwnedFd, name: &[u8], path: &[u8], keep_dir: bool) -> Result<bool> {
        let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(e).sys("stat", &show(name)),
        };
        let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        if is_dir && keep_dir {
            return Ok(true);
        }
        self.cache = None;
        self.dirs.remove(path);
        if is_dir {
            let mut lo = path.to_vec();
            lo.push(b'/');
            let mut hi = path.to_vec();
            hi.push(b'/' + 1);
            let below: Vec<Vec<u8>> = self.dirs.range(lo..hi).map(|(k, _)| k.clone()).collect();
            for k in below {
                self.dirs.remove(&k);
            }
        }
        if is_dir {
            let p = format!("/proc/self/fd/{}/{}", dir.as_raw_fd(), show(name));
            std::fs::remove_dir_all(&p).ctx("remove directory", show(name))?;
        } else {
            unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).sys("remove", &show(name))?;
        }
        Ok(false)
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let path = clean(&raw);
        let kind = entry.header().entry_type();
        let mut meta = Meta {
            mode: entry.header().mode().unwrap_or(0o644) & 0o7777,
            uid: entry.header().uid().unwrap_or(0),
            gid: entry.header().gid().unwrap_or(0),
            mtime: entry.header().mtime().unwrap_or(0) as i64,
            xattrs: Vec::new(),
        };
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                let (Ok(k), v) = (ext.key(), ext.value_bytes()) else {
                    continue;
                };
                match k {
                    "uid" => {
                        meta.uid = ext
                            .value()
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(meta.uid)
                    }
                    "gid" => {
                        meta.gid = ext
                            .value()
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(meta.gid)
                    }
                    "mtime" => {
                        if let Some(t) = ext
                            .value()
                            .ok()
                            .and_then(|s| s.split('.').next().and_then(|s| s.parse().ok()))
                        {
                            meta.mtime = t;
                        }
                    }
                    _ => {
                        if let Some(x) = k.strip_prefix("SCHILY.xattr.") {
                            if !is_overlay_xattr(x.as_bytes()) {
                                meta.xattrs.push((x.to_string(), v.to_vec()));
                            }
                        }
                    }
                }
            }
        }
        if let Some((uid, gid)) = self.opts.owner {
            meta.uid = u64::from(uid);
            meta.gid = u64::from(gid);
        }
        use tar::EntryType as T;
        if matches!(
            kind,
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
        ) {
            return Ok(());
        }
        if path.is_empty() {
            // The root itself (`./`): nothing to create.
            return Ok(());
        }
        let (parent, name) = split(&path);
        let name = name.to_vec();

        // Whiteouts.
        let whiteout = match self.opts.whiteouts {
            WhiteoutMode::Keep => None,
            WhiteoutMode::Apply | WhiteoutMode::Overlay => name.strip_prefix(b".wh."),
        };
        if let Some(target) = whiteout {
            let fd = match self.resolve(&parent, self.opts.whiteouts == WhiteoutMode::Overlay) {
                Ok(fd) => fd,
                // Apply mode: nothing to delete when the directory is not there.
                Err(_) if self.opts.whiteouts == WhiteoutMode::Apply => {
                    if target.is_empty() || target == b"." || target == b".." {
                        return Err(
                            self.bad(&raw, "invalid whiteout name (whiteouts must name an entry)")
                        );
                    }
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            if target == b".wh..opq" {
                return self.opaque(&fd, &parent);
            }
            if target.starts_with(b".wh.") {
                // Other aufs metadata (.wh..wh.plnk, ...): docker ignores these.
                return Ok(());
            }
            if target.is_empty() || target == b"." || target == b".." {
                return Err(self.bad(&raw, "invalid whiteout name (whiteouts must name an entry)"));
            }
            match self.opts.whiteouts {
                // (Keep never gets here)
                WhiteoutMode::Apply | WhiteoutMode::Keep => {
                    self.remove(&fd, target, &join(&parent, target), false)?;
                }
                WhiteoutMode::Overlay => {
                    self.remove(&fd, target, &join(&parent, target), false)?;
                    mknodat(&fd, target, SFlag::S_IFCHR, Mode::empty(), 0)
                        .sys("create overlay whiteout", &show(&path))?;
                }
            }
            return Ok(());
        }

        let fd = self.resolve(&parent, true)?;
        match kind {
            T::Directory => {
                match mkdirat(&*fd, &name[..], Mode::from_bits_truncate(0o700)) {
                    Err(Errno::EEXIST) => {
                        // An existing directory is merged into; anything else is replaced.
                        if !self.remove(&fd, &name, &path, true)? {
                            mkdirat(&*fd, &name[..], Mode::from_bits_truncate(0o700))
                                .sys("create directory", &show(&path))?;
                        }
                    }
                    r => r.sys("create directory", &show(&path))?,
                }
                let d = openat(
                    &fd,
                    &name[..],
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .sys("open directory", &show(&path))?;
                // Keep the directory readable, writable and searchable for its owner until the
                // end (exactly the bits added here make the mode deferred).
                const TEMP: u32 = 0o700;
                let deferred = (meta.mode & TEMP != TEMP).then_some(meta.mode);
                let now = Meta {
                    mode: meta.mode | TEMP,
                    xattrs: std::mem::take(&mut meta.xattrs),
                    ..meta
                };
                self.set_meta_fd(&d, &now, &path)?;
                let st = fstat(&d).sys("stat directory", &show(&path))?;
                self.dirs.insert(
                    path.clone(),
                    DirFix {
                        path: path.clone(),
                        mtime: meta.mtime,
                        mode: deferred,
                        id: (st.st_dev, st.st_ino),
                    },
                );
            }
            T::Regular | T::Continuous => {
                let create = || {
                    openat(
                        &*fd,
                        &name[..],
                        OFlag::O_WRONLY
                            | OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o600),
                    )
                };
                // Usually nothing is there: try first, replace only on EEXIST.
                let f = match create() {
                    Err(Errno::EEXIST) => {
                        self.remove(&fd, &name, &path, false)?;
                        create()
                    }
                    r => r,
                }
                .sys("create file", &show(&path))?;
                let mut file = File::from(f);
                let size = entry.header().entry_size().unwrap_or(0);
                let mut written = 0u64;
                loop {
                    let n = entry
                        .read(&mut self.buf)
                        .map_err(|e| Error::bad_tar(&self.opts.what, e))?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&self.buf[..n]).ctx("write", show(&path))?;
                    written += n as u64;
                }
                if written != size {
                    return Err(Error::Format(format!(
                        "{} is truncated: entry {} has {written} of {size} bytes",
                        self.opts.what,
                        show(&raw)
                    )));
                }
                self.stats.bytes += written;
                let owned: OwnedFd = file.into();
                self.set_meta_fd(&owned, &meta, &path)?;
                let t = TimeSpec::new(meta.mtime, 0);
                futimens(&owned, &t, &t).sys("set times of", &show(&path))?;
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.bad(&raw, "symlink without a target"))?
                    .into_owned();
                self.remove(&fd, &name, &path, false)?;
                // The target is stored unchanged (absolute targets are legitimate in images);
                // it is only ever followed through RESOLVE_IN_ROOT.
                symlinkat(&target[..], &fd, &name[..]).sys("create symlink", &show(&path))?;
                self.chown_nofollow(&fd, &name, &meta, &path)?;
                let t = TimeSpec::new(meta.mtime, 0);
                let _ = utimensat(&fd, &name[..], &t, &t, UtimensatFlags::NoFollowSymlink);
                self.cache = None;
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.bad(&raw, "hardlink without a target"))?
                    .into_owned();
                let tpath = clean(&target);
                if tpath.is_empty() {
                    return Err(self.bad(&raw, "hardlink to the root directory"));
                }
                let (tparent, tname) = split(&tpath);
                let tname = tname.to_vec();
                let not_here =
                    || format!("hardlink target {:?} is not in this layer", show(&target));
                let tfd = match self.resolve(&tparent, false) {
                    Ok(f) => f,
                    Err(_) => return Err(self.bad(&raw, not_here())),
                };
                let st = fstatat(&tfd, &tname[..], AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|_| self.bad(&raw, not_here()))?;
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
                    return Err(self.bad(&raw, "hardlink to a directory"));
                }
                let fd = self.resolve(&parent, true)?;
                if tparent == parent && tname == name {
                    return Ok(());
                }
                self.remove(&fd, &name, &path, false)?;
                // No AT_SYMLINK_FOLLOW: a symlink target is linked as the symlink itself.
                linkat(&tfd, &tname[..], &fd, &name[..], AtFlags::empty())
                    .sys("create hardlink", &show(&path))?;
            }
            T::Char | T::Block | T::Fifo => {
                self.remove(&fd, &name, &path, false)?;
                let (k, dev) = match kind {
                    T::Char => (SFlag::S_IFCHR, dev(entry)),
                    T::Block => (SFlag::S_IFBLK, dev(entry)),
                    _ => (SFlag::S_IFIFO, 0),
                };
                match mknodat(&fd, &name[..], k, Mode::from_bits_truncate(0o600), dev) {
                    Err(Errno::EPERM)
                        if k != SFlag::S_IFIFO && self.opts.skip_devices_without_privilege =>
                    {
                        return Ok(());
                    }
                    r => r.sys("create device", &show(&path))?,
                }
                self.chown_nofollow(&fd, &name, &meta, &path)?;
                fchmodat(
                    &fd,
                    &name[..],
                    Mode::from_bits_truncate(meta.mode),
                    FchmodatFlags::FollowSymlink,
                )
                .sys("chmod", &show(&path))?;
                let t = TimeSpec::new(meta.mtime, 0);
                let _ = utimensat(&fd, &name[..], &t, &t, UtimensatFlags::NoFollowSymlink);
            }
            other => {
                return Err(self.bad(&raw, format!("unsupported tar entry type {:?}", other)));
            }
        }
        if self.opts.whiteouts == WhiteoutMode::Apply {
            self.created.insert(path);
        }
        Ok(())
    }

    /// With `same_owner`, gives `name` in `dirfd` the entry's owner without following a
    /// symlink there.
    fn chown_nofollow(&self, dirfd: &OwnedFd, name: &[u8], meta: &Meta, path: &[u8]) -> Result<()> {
        if self.opts.same_owner || self.opts.owner.is_some() {
            fchownat(
                dirfd,
                name,
                Some(Uid::from_raw(meta.uid as u32)),
                Some(Gid::from_raw(meta.gid as u32)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .sys("chown", &show(path))?;
        }
        Ok(())
    }

    fn set_meta_fd(&self, fd: &OwnedFd, meta: &Meta, path: &[u8]) -> Result<()> {
        if self.opts.same_owner || self.opts.owner.is_some() {
            fchown(
                fd,
                Some(Uid::from_raw(meta.uid as u32)),
                Some(Gid::from_raw(meta.gid as u32)),
            )
            .sys("chown", &show(path))?;
        }
        fchmod(fd, Mode::from_bits_truncate(meta.mode)).sys("chmod", &show(path))?;
        if self.opts.xattrs && !meta.xattrs.is_empty() {
            let f = File::from(fd.try_clone().ctx("dup fd for", show(path))?);
            for (k, v) in &meta.xattrs {
                use xattr::FileExt;
                if let Err(e) = f.set_xattr(k, v) {
                    // Filesystems without xattr support (or security.* without privilege) lose
                    // the attribute, as with docker on such filesystems.
                    if !matches!(
                        e.raw_os_error(),
                        Some(nix::libc::ENOTSUP) | Some(nix::libc::EPERM)
                    ) {
                        return Err(e).ctx("set xattr on", show(path));
                    }
                }
            }
        }
        Ok(())
    }

    fn opaque(&mut self, dirfd: &OwnedFd, parent: &[u8]) -> Result<()> {
        match self.opts.whiteouts {
            WhiteoutMode::Overlay => {
                let f = File::from(dirfd.try_clone().ctx("dup fd for", show(parent))?);
                use xattr::FileExt;
                let what = if self.opts.overlay_xattrs == OverlayXattrs::Trusted {
                    "set trusted.overlay.opaque (root only) on directory"
                } else {
                    "set user.overlay.opaque (needs a filesystem with user xattrs) on directory"
                };
                f.set_xattr(self.opts.overlay_xattrs.opaque(), b"y")
                    .ctx(what, show(parent))?;
            }
            WhiteoutMode::Apply => {
                let p = format!("/proc/self/fd/{}", dirfd.as_fd().as_raw_fd());
                let rd = std::fs::read_dir(&p).ctx("read directory", show(parent))?;
                for child in rd {
                    let child = child.ctx("read directory", show(parent))?;
                    use std::os::unix::ffi::OsStrExt;
                    let n = child.file_name();
                    let mut full = parent.to_vec();
                    if !full.is_empty() {
                        full.push(b'/');
                    }
                    full.extend_from_slice(n.as_bytes());
                    if !self.created.contains(&full) {
                        self.remove(dirfd, n.as_bytes(), &full, false)?;
                    }
                }
            }
            // an opaque marker is an ordinary file there (never called)
            WhiteoutMode::Keep => {}
        }
        Ok(())
    }
}

fn dev<R: Read>(entry: &tar::Entry<'_, R>) -> u64 {
    let h = entry.header();
    makedev(
        u64::from(h.device_major().ok().flatten().unwrap_or(0)),
        u64::from(h.device_minor().ok().flatten().unwrap_or(0)),
    )
}

#[cfg(test)]
mod tests;
