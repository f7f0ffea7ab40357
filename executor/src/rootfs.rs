//! Path-safe access to a directory tree as if it were `/`.
//!
//! [`Root`] holds a directory fd. Paths are in-root (`/usr/bin`); symlinks are followed as the
//! kernel would inside a chroot of that directory ([`Root::resolve`], continuity's `RootPath`),
//! every open goes through `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, and the last
//! component is created, replaced or changed with `*at` calls that never follow it. An absolute
//! symlink such as `etc -> /etc` in an image therefore lands inside the image, never on the host.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, readlinkat, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmodat, fstatat, mkdirat, utimensat, FchmodatFlags, FileStat, Mode};
use nix::sys::stat::{SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::{Error, Result};

/// Symlinks followed while resolving one path (Linux's limit is 40; continuity's 255).
const MAX_LINKS: u32 = 255;

/// The type of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// `lstat`-like information about an entry.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub kind: Kind,
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub rdev: u64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub atime: TimeSpec,
    pub mtime: TimeSpec,
}

impl Meta {
    pub fn from_stat(st: &FileStat) -> Meta {
        let fmt = st.st_mode & SFlag::S_IFMT.bits();
        let kind = if fmt == SFlag::S_IFREG.bits() {
            Kind::File
        } else if fmt == SFlag::S_IFDIR.bits() {
            Kind::Dir
        } else if fmt == SFlag::S_IFLNK.bits() {
            Kind::Symlink
        } else {
            Kind::Other
        };
        Meta {
            kind,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            rdev: st.st_rdev,
            dev: st.st_dev,
            ino: st.st_ino,
            nlink: st.st_nlink,
            atime: TimeSpec::new(st.st_atime, st.st_atime_nsec),
            mtime: TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
        }
    }

    /// Permission bits including setuid/setgid/sticky.
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
}

/// Joins in-root paths lexically: `join("/a", "b/../c")` = `/a/c`.
pub fn join(base: &str, rel: &str) -> String {
    clean(&format!("{base}/{rel}"))
}

/// Lexically cleans an in-root path: always absolute, no `.`, `..` or empty components (the
/// sandbox's own cleaning, so both agree on what a path names).
pub use lade_runtime::spec::clean_path as clean;

/// Splits a cleaned in-root path into parent and last component (`/` has none).
pub fn split(p: &str) -> Option<(&str, &str)> {
    let (parent, name) = p.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    Some((if parent.is_empty() { "/" } else { parent }, name))
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

fn errno(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

/// A directory used as `/`.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// Opens `path` (a host directory) as a root.
    pub fn open(path: &Path) -> Result<Root> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::Io {
            what: "open",
            path: path.to_path_buf(),
            source: errno(e),
        })?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The host path the root was opened from.
    pub fn host_path(&self) -> &Path {
        &self.path
    }

    /// Opens an in-root path (symlinks resolved inside the root).
    pub fn open_at(&self, p: &str, flags: OFlag) -> Result<OwnedFd> {
        let rel = clean(p);
        openat2(&self.fd, rel.as_str(), how(flags)).map_err(|e| Error::Fs {
            what: "open",
            path: rel.clone(),
            source: errno(e),
        })
    }

    fn try_open(&self, p: &str, flags: OFlag) -> Result<Option<OwnedFd>> {
        match openat2(&self.fd, clean(p).as_str(), how(flags)) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(Error::Fs {
                what: "open",
                path: p.to_string(),
                source: errno(e),
            }),
        }
    }

    /// The directory holding `p` (resolved inside the root) and `p`'s last component. For `/`
    /// there is none: an error.
    pub fn parent(&self, p: &str) -> Result<(OwnedFd, String)> {
        let c = clean(p);
        let Some((parent, name)) = split(&c) else {
            return Err(Error::Invalid(format!("{p:?} has no parent directory")));
        };
        let fd = self.open_at(parent, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
        Ok((fd, name.to_string()))
    }

    /// `lstat` of an in-root path (intermediate symlinks followed inside the root, the last
    /// component not); `None` when missing.
    pub fn lstat(&self, p: &str) -> Result<Option<Meta>> {
        let c = clean(p);
        if c == "/" {
            let st = nix::sys::stat::fstat(&self.fd).map_err(|e| Error::Fs {
                what: "stat",
                path: c.clone(),
                source: errno(e),
            })?;
            return Ok(Some(Meta::from_stat(&st)));
        }
        let (parent, name) = match self.parent(&c) {
            Ok(x) => x,
            Err(Error::Fs { source, .. })
                if source.raw_os_error() == Some(libc_enoent())
                    || source.raw_os_error() == Some(Errno::ENOTDIR as i32) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        match fstatat(&parent, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Meta::from_stat(&st))),
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => Ok(None),
            Err(e) => Err(Error::Fs {
                what: "stat",
                path: c,
                source: errno(e),
            }),
        }
    }

    /// `stat` following every symlink inside the root; `None` when missing or dangling.
    pub fn stat(&self, p: &str) -> Result<Option<Meta>> {
        let r = self.resolve(p)?;
        self.lstat(&r)
    }

    /// Reads a symlink's target.
    pub fn readlink(&self, p: &str) -> Result<PathBuf> {
        let (parent, name) = self.parent(p)?;
        readlinkat(&parent, name.as_str())
            .map(PathBuf::from)
            .map_err(|e| Error::Fs {
                what: "read link",
                path: p.to_string(),
                source: errno(e),
            })
    }

    /// continuity's `RootPath`: `p` cleaned with every existing symlink followed inside the
    /// root. Components that do not exist are kept as written.
    pub fn resolve(&self, p: &str) -> Result<String> {
        let mut stack: Vec<String> = clean(p)
            .split('/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(String::from)
            .collect();
        let mut cur: Vec<String> = Vec::new();
        let mut links = 0;
        let mut missing = false;
        while let Some(c) = stack.pop() {
            if c == "." {
                continue;
            }
            if c == ".." {
                cur.pop();
                continue;
            }
            if missing {
                cur.push(c);
                continue;
            }
            let cand = format!("/{}", {
                let mut v = cur.clone();
                v.push(c.clone());
                v.join("/")
            });
            match self.lstat(&cand)? {
                Some(m) if m.kind == Kind::Symlink => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(Error::Fs {
                            what: "resolve",
                            path: p.to_string(),
                            source: errno(Errno::ELOOP),
                        });
                    }
                    let target = self.readlink(&cand)?;
                    let t = target.to_string_lossy().into_owned();
                    if t.starts_with('/') {
                        cur.clear();
                    }
                    for part in t.split('/').filter(|s| !s.is_empty()).rev() {
                        stack.push(part.to_string());
                    }
                }
                Some(_) => cur.push(c),
                None => {
                    missing = true;
                    cur.push(c);
                }
            }
        }
        Ok(format!("/{}", cur.join("/")))
    }

    /// Names in a directory (symlinks in `p` resolved), sorted bytewise.
    pub fn read_dir(&self, p: &str) -> Result<Vec<std::ffi::OsString>> {
        let fd = self.open_at(p, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(|e| Error::Fs {
            what: "read directory",
            path: p.to_string(),
            source: errno(e),
        })?;
        let mut out = Vec::new();
        for e in dir.iter() {
            let e = e.map_err(|e| Error::Fs {
                what: "read directory",
                path: p.to_string(),
                source: errno(e),
            })?;
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            out.push(OsStr::from_bytes(name).to_os_string());
        }
        out.sort();
        Ok(out)
    }

    /// Opens a regular file for reading without following a final symlink.
    pub fn open_file(&self, p: &str) -> Result<File> {
        Ok(File::from(
            self.open_at(p, OFlag::O_RDONLY | OFlag::O_NOFOLLOW)?,
        ))
    }

    /// Reads a small file (`/etc/passwd`), following symlinks inside the root; `None` when it
    /// does not exist.
    pub fn read_small(&self, p: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let Some(fd) = self.try_open(p, OFlag::O_RDONLY)? else {
            return Ok(None);
        };
        let mut v = Vec::new();
        File::from(fd)
            .take(limit)
            .read_to_end(&mut v)
            .map_err(crate::fs_err("read", p))?;
        Ok(Some(v))
    }

    /// Creates every missing directory of `p` (symlinks followed inside the root) with `mode`,
    /// owner and times; existing directories are left alone. A non-directory in the way is an
    /// error.
    pub fn mkdir_all(
        &self,
        p: &str,
        mode: u32,
        owner: Option<(u32, u32)>,
        time: Option<TimeSpec>,
    ) -> Result<()> {
        let r = self.resolve(p)?;
        let mut cur = String::new();
        for c in r.split('/').filter(|c| !c.is_empty()) {
            let parent = if cur.is_empty() {
                "/".to_string()
            } else {
                cur.clone()
            };
            cur.push('/');
            cur.push_str(c);
            match self.lstat(&cur)? {
                Some(m) if m.kind == Kind::Dir => continue,
                Some(_) => {
                    return Err(Error::Fs {
                        what: "create directory",
                        path: cur.clone(),
                        source: errno(Errno::ENOTDIR),
                    })
                }
                None => {}
            }
            let pfd = self.open_at(&parent, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
            match mkdirat(&pfd, c, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => {
                    return Err(Error::Fs {
                        what: "create directory",
                        path: cur.clone(),
                        source: errno(e),
                    })
                }
            }
            set_meta(&pfd, c, &cur, Some(mode), owner, time, false)?;
        }
        Ok(())
    }

    /// Removes whatever non-directory entry is at `name` in `parent`; a directory is an error
    /// unless `allow_dir` (then it is removed recursively).
    pub fn remove_entry(&self, parent: &OwnedFd, name: &str, path: &str) -> Result<()> {
        match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(Error::Fs {
                what: "stat",
                path: path.to_string(),
                source: errno(e),
            }),
            Ok(st) if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() => {
                Err(Error::Invalid(format!(
                    "cannot replace directory {path} with a non-directory"
                )))
            }
            Ok(_) => unlinkat(parent, name, UnlinkatFlags::NoRemoveDir).map_err(|e| Error::Fs {
                what: "remove",
                path: path.to_string(),
                source: errno(e),
            }),
        }
    }
}

fn libc_enoent() -> i32 {
    Errno::ENOENT as i32
}

/// Sets mode (not for symlinks), owner and times of `name` in `parent`, never following it.
pub fn set_meta(
    parent: &impl AsFd,
    name: &str,
    path: &str,
    mode: Option<u32>,
    owner: Option<(u32, u32)>,
    time: Option<TimeSpec>,
    symlink: bool,
) -> Result<()> {
    let fail = |what: &'static str| {
        move |e: Errno| Error::Fs {
            what,
            path: path.to_string(),
            source: errno(e),
        }
    };
    if let Some((u, g)) = owner {
        fchownat(
            parent,
            name,
            Some(Uid::from_raw(u)),
            Some(Gid::from_raw(g)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(fail("chown"))?;
    }
    if let (Some(m), false) = (mode, symlink) {
        // after chown: chown clears setuid/setgid bits
        fchmodat(
            parent,
            name,
            Mode::from_bits_truncate(m & 0o7777),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(fail("chmod"))?;
    }
    if let Some(t) = time {
        utimensat(parent, name, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(fail("set times of"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_join_split() {
        assert_eq!(clean("a/./b//../c/"), "/a/c");
        assert_eq!(clean("/../.."), "/");
        assert_eq!(join("/app", "../x"), "/x");
        assert_eq!(split("/a/b"), Some(("/a", "b")));
        assert_eq!(split("/a"), Some(("/", "a")));
        assert_eq!(split("/"), None);
    }

    #[test]
    fn resolve_stays_inside() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/real", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", r.join("up")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        let root = Root::open(r).unwrap();
        assert_eq!(root.resolve("/abs/dir/x").unwrap(), "/real/dir/x");
        assert_eq!(root.resolve("up/passwd").unwrap(), "/etc/passwd");
        assert!(root.resolve("/loop/x").is_err());
        assert_eq!(root.stat("/abs").unwrap().unwrap().kind, Kind::Dir);
        assert_eq!(root.lstat("/abs").unwrap().unwrap().kind, Kind::Symlink);
        assert!(root.lstat("/nope/x").unwrap().is_none());
        root.mkdir_all("/abs/new/deeper", 0o755, None, None)
            .unwrap();
        assert!(r.join("real/new/deeper").is_dir());
        // through the absolute link, still inside
        root.mkdir_all("/up/made", 0o755, None, None).unwrap();
        assert!(r.join("etc/made").is_dir());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(r.join("etc/made"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o755
        );
        assert_eq!(root.read_dir("/real").unwrap().len(), 2);
    }
}
