//! The syscall seam: [`Syscall`] is every kernel operation the sandbox setup makes, so the logic
//! in `setup` (what to mount where, in which order, what to refuse) runs against a recording
//! double in unit tests and against [`Linux`] in the sandbox init.
//!
//! In-root operations take absolute paths inside the new root and resolve them with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` from a root directory fd: a symlink in the
//! image can never lead outside the rootfs, and a `/proc/self/fd/N` magic link never resolves.
//! Mount targets are opened `O_PATH | O_NOFOLLOW` and mounted on through `/proc/self/fd/N`, so a
//! target that is a symlink is refused and nothing can swap it between check and mount.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{fstat, Mode, SFlag};

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    Dir,
    File,
    Symlink,
    Other,
}

/// Source of a mount made inside the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// A filesystem source name (`proc`, `tmpfs`, ...).
    Fs(&'a str),
    /// A host path (trusted: given by the caller).
    Host(&'a Path),
    /// A path inside the root, resolved like a target.
    InRoot(&'a str),
}

pub type SysResult<T> = std::result::Result<T, Errno>;

/// Kernel operations of the sandbox setup.
pub trait Syscall {
    /// `mount(2)` on a host path (before the root is set).
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult<()>;
    /// Opens host directories and keeps them open (until exec); returns names for them that
    /// stay valid when their paths are covered (`/proc/self/fd/N`).
    fn hold_dirs(&self, paths: &[PathBuf]) -> SysResult<Vec<String>>;
    fn mkdir_host(&self, path: &Path, mode: u32) -> SysResult<()>;
    fn write_host_file(&self, path: &Path, contents: &[u8]) -> SysResult<()>;
    /// Sets the directory that later in-root operations resolve against.
    fn set_root(&self, root: &Path) -> SysResult<()>;
    /// Type of `path` in the root, not following a final symlink; `None` when missing.
    fn lookup(&self, path: &str) -> SysResult<Option<FileType>>;
    fn mkdir(&self, path: &str, mode: u32) -> SysResult<()>;
    /// `chown` of an in-root path, not following a final symlink.
    fn chown(&self, path: &str, uid: u32, gid: u32) -> SysResult<()>;
    /// Creates an empty regular file (fails if anything exists there).
    fn create_file(&self, path: &str, mode: u32) -> SysResult<()>;
    fn mknod_char(&self, path: &str, mode: u32, major: u32, minor: u32) -> SysResult<()>;
    fn symlink(&self, target: &str, link: &str) -> SysResult<()>;
    /// Mounts on an in-root target; `ELOOP` when the target is a symlink.
    fn mount_in_root(
        &self,
        source: Source<'_>,
        target: &str,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult<()>;
    /// Type of a host path (following symlinks: the caller named it).
    fn host_type(&self, path: &Path) -> SysResult<FileType>;
    /// `pivot_root` into the root set by [`Syscall::set_root`] and detach the old root.
    fn pivot_root(&self) -> SysResult<()>;
    fn sethostname(&self, name: &str) -> SysResult<()>;
    /// Brings `lo` up in the current network namespace.
    fn loopback_up(&self) -> SysResult<()>;
    /// Reads a file in the root (at most `limit` bytes); `None` when missing.
    fn read_file(&self, path: &str, limit: usize) -> SysResult<Option<Vec<u8>>>;
    /// `chdir` to an in-root directory.
    fn chdir_in_root(&self, path: &str) -> SysResult<()>;
    fn set_rlimit(&self, resource: u32, soft: u64, hard: u64) -> SysResult<()>;
    fn set_keepcaps(&self, on: bool) -> SysResult<()>;
    /// Drops every capability not in `keep` from the bounding set.
    fn drop_bounding(&self, keep: u64) -> SysResult<()>;
    fn setgroups(&self, groups: &[u32]) -> SysResult<()>;
    /// `setresgid` then `setresuid`.
    fn set_ids(&self, uid: u32, gid: u32) -> SysResult<()>;
    fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> SysResult<()>;
    fn clear_ambient(&self) -> SysResult<()>;
    fn set_no_new_privs(&self) -> SysResult<()>;
}

/// The real thing.
#[derive(Debug, Default)]
pub struct Linux {
    root: RefCell<Option<(PathBuf, OwnedFd)>>,
    held: RefCell<Vec<OwnedFd>>,
}

fn cstr(p: &[u8]) -> SysResult<CString> {
    CString::new(p).map_err(|_| Errno::EINVAL)
}

fn file_type(fd: &OwnedFd) -> SysResult<FileType> {
    let st = fstat(fd)?;
    let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    Ok(if fmt == SFlag::S_IFDIR {
        FileType::Dir
    } else if fmt == SFlag::S_IFREG {
        FileType::File
    } else if fmt == SFlag::S_IFLNK {
        FileType::Symlink
    } else {
        FileType::Other
    })
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Splits an absolute in-root path into parent and last component.
fn split(path: &str) -> SysResult<(&str, &str)> {
    let path = path.trim_end_matches('/');
    match path.rsplit_once('/') {
        Some((parent, name)) if !name.is_empty() && name != "." && name != ".." => {
            Ok((if parent.is_empty() { "/" } else { parent }, name))
        }
        _ => Err(Errno::EINVAL),
    }
}

/// Resolution flags for everything inside the rootfs.
pub(crate) fn in_root() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// Opens `path` under `dir` with `resolve` and `flags` (plus `O_CLOEXEC`).
pub(crate) fn open_under(
    dir: &impl AsFd,
    path: &str,
    flags: OFlag,
    resolve: ResolveFlag,
) -> SysResult<OwnedFd> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    openat2(
        dir,
        rel,
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(resolve),
    )
}

impl Linux {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_root<T>(&self, f: impl FnOnce(&OwnedFd) -> SysResult<T>) -> SysResult<T> {
        let root = self.root.borrow();
        let (_, fd) = root.as_ref().ok_or(Errno::EBADF)?;
        f(fd)
    }

    fn open_in_root(&self, path: &str, flags: OFlag) -> SysResult<OwnedFd> {
        self.with_root(|root| open_under(root, path, flags, in_root()))
    }

    fn parent_in_root(&self, path: &str) -> SysResult<(OwnedFd, CString)> {
        let (parent, name) = split(path)?;
        let fd = self.open_in_root(parent, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
        Ok((fd, cstr(name.as_bytes())?))
    }
}

impl Syscall for Linux {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn hold_dirs(&self, paths: &[PathBuf]) -> SysResult<Vec<String>> {
        let mut names = Vec::with_capacity(paths.len());
        for p in paths {
            let fd = nix::fcntl::open(
                p.as_path(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            names.push(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            self.held.borrow_mut().push(fd);
        }
        Ok(names)
    }

    fn mkdir_host(&self, path: &Path, mode: u32) -> SysResult<()> {
        nix::unistd::mkdir(path, Mode::from_bits_truncate(mode))
    }

    fn write_host_file(&self, path: &Path, contents: &[u8]) -> SysResult<()> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )?;
        let mut rest = contents;
        while !rest.is_empty() {
            match nix::unistd::write(&fd, rest) {
                Ok(n) => rest = &rest[n..],
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn set_root(&self, root: &Path) -> SysResult<()> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        *self.root.borrow_mut() = Some((root.to_path_buf(), fd));
        Ok(())
    }

    fn lookup(&self, path: &str) -> SysResult<Option<FileType>> {
        match self.open_in_root(path, OFlag::O_PATH | OFlag::O_NOFOLLOW) {
            Ok(fd) => file_type(&fd).map(Some),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn mkdir(&self, path: &str, mode: u32) -> SysResult<()> {
        let (dir, name) = self.parent_in_root(path)?;
        // SAFETY: valid fd and NUL-terminated name.
        Errno::result(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
    }

    fn chown(&self, path: &str, uid: u32, gid: u32) -> SysResult<()> {
        let (dir, name) = self.parent_in_root(path)?;
        // SAFETY: valid fd and NUL-terminated name.
        Errno::result(unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                name.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map(drop)
    }

    fn create_file(&self, path: &str, mode: u32) -> SysResult<()> {
        let (dir, name) = self.parent_in_root(path)?;
        // SAFETY: valid fd and NUL-terminated name; the returned fd is owned and closed.
        let fd = Errno::result(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_WRONLY | libc::O_CLOEXEC,
                mode,
            )
        })?;
        // SAFETY: openat returned a fresh fd that nothing else owns.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(())
    }

    fn mknod_char(&self, path: &str, mode: u32, major: u32, minor: u32) -> SysResult<()> {
        let (dir, name) = self.parent_in_root(path)?;
        let dev = libc::makedev(major, minor);
        // SAFETY: valid fd and NUL-terminated name.
        Errno::result(unsafe {
            libc::mknodat(dir.as_raw_fd(), name.as_ptr(), libc::S_IFCHR | mode, dev)
        })
        .map(drop)
    }

    fn symlink(&self, target: &str, link: &str) -> SysResult<()> {
        let (dir, name) = self.parent_in_root(link)?;
        let target = cstr(target.as_bytes())?;
        // SAFETY: valid fd and NUL-terminated strings.
        Errno::result(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
            .map(drop)
    }

    fn mount_in_root(
        &self,
        source: Source<'_>,
        target: &str,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult<()> {
        let tfd = self.open_in_root(target, OFlag::O_PATH | OFlag::O_NOFOLLOW)?;
        if file_type(&tfd)? == FileType::Symlink {
            return Err(Errno::ELOOP);
        }
        let tpath = fd_path(&tfd);
        match source {
            Source::Fs(name) => nix::mount::mount(Some(name), &tpath, fstype, flags, data),
            Source::Host(p) => nix::mount::mount(Some(p), &tpath, fstype, flags, data),
            Source::InRoot(p) => {
                let sfd = self.open_in_root(p, OFlag::O_PATH | OFlag::O_NOFOLLOW)?;
                if file_type(&sfd)? == FileType::Symlink {
                    return Err(Errno::ELOOP);
                }
                nix::mount::mount(Some(&fd_path(&sfd)), &tpath, fstype, flags, data)
            }
        }
    }

    fn host_type(&self, path: &Path) -> SysResult<FileType> {
        let fd = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())?;
        file_type(&fd)
    }

    fn pivot_root(&self) -> SysResult<()> {
        let root = self.root.borrow_mut().take().ok_or(Errno::EBADF)?;
        nix::unistd::fchdir(&root.1)?;
        nix::unistd::pivot_root(".", ".")?;
        // The old root is now stacked on top of the new one at "/": detach it, so nothing of
        // the host stays reachable.
        nix::mount::umount2(".", MntFlags::MNT_DETACH)?;
        nix::unistd::chdir("/")?;
        let fd = nix::fcntl::open(
            "/",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        *self.root.borrow_mut() = Some((PathBuf::from("/"), fd));
        Ok(())
    }

    fn sethostname(&self, name: &str) -> SysResult<()> {
        nix::unistd::sethostname(name)
    }

    fn loopback_up(&self) -> SysResult<()> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let sock = Errno::result(unsafe {
            libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
        })?;
        // SAFETY: fresh fd owned by nothing else.
        let sock = unsafe { OwnedFd::from_raw_fd(sock) };
        // SAFETY: ifreq is plain old data; zeroed is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
        unsafe {
            Errno::result(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req))?;
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            Errno::result(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req))?;
        }
        Ok(())
    }

    fn read_file(&self, path: &str, limit: usize) -> SysResult<Option<Vec<u8>>> {
        use std::io::Read;
        let fd = match self.open_in_root(path, OFlag::O_RDONLY | OFlag::O_NOFOLLOW) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        if file_type(&fd)? != FileType::File {
            return Err(Errno::EINVAL);
        }
        let mut buf = Vec::new();
        std::fs::File::from(fd)
            .take(limit as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        if buf.len() > limit {
            return Err(Errno::EFBIG);
        }
        Ok(Some(buf))
    }

    fn chdir_in_root(&self, path: &str) -> SysResult<()> {
        let fd = self.open_in_root(path, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
        nix::unistd::fchdir(&fd)
    }

    fn set_rlimit(&self, resource: u32, soft: u64, hard: u64) -> SysResult<()> {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the struct we pass.
        Errno::result(unsafe { libc::setrlimit(resource as _, &lim) }).map(drop)
    }

    fn set_keepcaps(&self, on: bool) -> SysResult<()> {
        nix::sys::prctl::set_keepcaps(on)
    }

    fn drop_bounding(&self, keep: u64) -> SysResult<()> {
        for cap in 0..64u64 {
            if keep & (1 << cap) != 0 {
                continue;
            }
            // SAFETY: prctl with integer arguments only.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if r < 0 {
                match Errno::last() {
                    // Past the last capability this kernel knows.
                    Errno::EINVAL => break,
                    e => return Err(e),
                }
            }
        }
        Ok(())
    }

    fn setgroups(&self, groups: &[u32]) -> SysResult<()> {
        // SAFETY: setgroups reads `len` gids from the slice.
        Errno::result(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) }).map(drop)
    }

    fn set_ids(&self, uid: u32, gid: u32) -> SysResult<()> {
        // Raw syscalls: glibc's wrappers broadcast to all threads, which is pointless here and
        // not async-signal-safe.
        // SAFETY: integer-only syscalls.
        unsafe {
            Errno::result(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
            Errno::result(libc::syscall(libc::SYS_setresuid, uid, uid, uid))?;
        }
        Ok(())
    }

    fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> SysResult<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        let mut header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let lo = |v: u64| v as u32;
        let hi = |v: u64| (v >> 32) as u32;
        let data = [
            Data {
                effective: lo(effective),
                permitted: lo(permitted),
                inheritable: lo(inheritable),
            },
            Data {
                effective: hi(effective),
                permitted: hi(permitted),
                inheritable: hi(inheritable),
            },
        ];
        // SAFETY: capset reads a v3 header and two data structs, laid out as the kernel's.
        Errno::result(unsafe {
            libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr())
        })
        .map(drop)
    }

    fn clear_ambient(&self) -> SysResult<()> {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        match Errno::result(r) {
            Ok(_) | Err(Errno::EINVAL) => Ok(()), // EINVAL: kernel without ambient caps
            Err(e) => Err(e),
        }
    }

    fn set_no_new_privs(&self) -> SysResult<()> {
        nix::sys::prctl::set_no_new_privs()
    }
}

/// Marks every fd from `first` up close-on-exec (`close_range(CLOSE_RANGE_CLOEXEC)`, with a
/// loop over the open fds on kernels older than 5.11).
pub(crate) fn cloexec_from(first: RawFd) -> SysResult<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: integer-only syscall.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    for fd in first..fd_limit() {
        // SAFETY: fcntl on an fd that may or may not be open; EBADF is fine.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// Closes every fd from `first` up.
pub(crate) fn close_from(first: RawFd) {
    // SAFETY: integer-only syscall; closing fds nothing else in this single-threaded process
    // refers to (the init owns its few fds below `first`).
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        )
    };
    if r != 0 {
        for fd in first..fd_limit() {
            // SAFETY: as above; EBADF is fine.
            unsafe { libc::close(fd) };
        }
    }
}

fn fd_limit() -> RawFd {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft.min(65536) as RawFd)
        .unwrap_or(1024)
}

/// How the init gets one of its stdio fds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ChildFd {
    Inherit,
    Null,
    Fd(RawFd),
}

/// Starts `binary INIT_ARG` with `sock` as fd 3, through `posix_spawn(3)`: glibc implements it
/// with `clone(CLONE_VM | CLONE_VFORK)` and runs nothing but the file actions between clone and
/// exec, which is sound in a multi-threaded parent and costs no page-table copy. Signal
/// dispositions are reset to default and the mask emptied (the Rust runtime ignores SIGPIPE),
/// and the init gets its own session, away from the caller's terminal signals.
pub(crate) fn spawn_init(
    binary: &Path,
    init_arg: &str,
    sock: RawFd,
    stdio: [ChildFd; 3],
) -> SysResult<nix::unistd::Pid> {
    // Copies of every source fd above 10, so the dup2 actions cannot clobber each other.
    let high = |fd: RawFd| -> SysResult<OwnedFd> {
        // SAFETY: F_DUPFD_CLOEXEC returns a new fd that we own.
        let n = Errno::result(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) })?;
        // SAFETY: fresh fd owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(n) })
    };
    let path = path_cstr(binary)?;
    let arg0 = cstr(b"lade")?;
    let arg1 = cstr(init_arg.as_bytes())?;
    let dev_null = cstr(b"/dev/null")?;
    let mut keep = Vec::new();
    let mut dups = Vec::new();
    for (i, s) in stdio.iter().enumerate() {
        match s {
            ChildFd::Inherit => {}
            ChildFd::Null => dups.push((None, i as RawFd)),
            ChildFd::Fd(fd) => {
                let h = high(*fd)?;
                dups.push((Some(h.as_raw_fd()), i as RawFd));
                keep.push(h);
            }
        }
    }
    let h = high(sock)?;
    dups.push((Some(h.as_raw_fd()), 3));
    keep.push(h);

    // SAFETY: the file-actions and attribute objects are initialised before use and destroyed
    // on every path; argv/envp are NULL-terminated arrays of valid C strings that outlive the
    // call.
    unsafe {
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        Errno::result(libc::posix_spawn_file_actions_init(&mut fa))?;
        if let Err(e) = Errno::result(libc::posix_spawnattr_init(&mut attr)) {
            libc::posix_spawn_file_actions_destroy(&mut fa);
            return Err(e);
        }
        let result = (|| -> SysResult<nix::unistd::Pid> {
            let check = |r: libc::c_int| {
                if r == 0 {
                    Ok(())
                } else {
                    Err(Errno::from_raw(r))
                }
            };
            for (src, dst) in &dups {
                match src {
                    Some(src) => {
                        check(libc::posix_spawn_file_actions_adddup2(&mut fa, *src, *dst))?
                    }
                    None => check(libc::posix_spawn_file_actions_addopen(
                        &mut fa,
                        *dst,
                        dev_null.as_ptr(),
                        libc::O_RDWR,
                        0,
                    ))?,
                }
            }
            let flags = libc::POSIX_SPAWN_SETSIGMASK
                | libc::POSIX_SPAWN_SETSIGDEF
                | libc::POSIX_SPAWN_SETSID as libc::c_int;
            check(libc::posix_spawnattr_setflags(
                &mut attr,
                flags as libc::c_short,
            ))?;
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            check(libc::posix_spawnattr_setsigmask(&mut attr, &set))?;
            libc::sigfillset(&mut set);
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &set))?;
            let argv = [arg0.as_ptr(), arg1.as_ptr(), std::ptr::null()];
            let envp: [*const libc::c_char; 1] = [std::ptr::null()];
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                &fa,
                &attr,
                argv.as_ptr() as *const *mut libc::c_char,
                envp.as_ptr() as *const *mut libc::c_char,
            ))?;
            Ok(nix::unistd::Pid::from_raw(pid))
        })();
        libc::posix_spawnattr_destroy(&mut attr);
        libc::posix_spawn_file_actions_destroy(&mut fa);
        drop(keep);
        result
    }
}

fn ofd(file: &std::fs::File, cmd: libc::c_int) -> SysResult<libc::flock> {
    let mut fl = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0, // the whole file
        l_pid: 0,
    };
    loop {
        // SAFETY: fcntl reads and writes the flock struct we pass.
        match Errno::result(unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl) }) {
            Ok(_) => return Ok(fl),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Takes a write lock on the whole of `file` (an open-file-description lock: it lives as long
/// as this open file, whatever else the process does). `Ok(false)`: someone else holds it.
pub(crate) fn lock_file(file: &std::fs::File) -> SysResult<bool> {
    match ofd(file, libc::F_OFD_SETLK) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Blocks until the write lock of [`lock_file`] is free, then takes it (released when `file`
/// is closed). `file` must be open for writing.
pub(crate) fn wait_lock_file(file: &std::fs::File) -> SysResult<()> {
    ofd(file, libc::F_OFD_SETLKW).map(drop)
}

/// Whether someone else holds the write lock of [`lock_file`], asked without taking any lock
/// (so asking never disturbs the holder or a concurrent locker).
pub(crate) fn file_is_locked(file: &std::fs::File) -> SysResult<bool> {
    Ok(ofd(file, libc::F_OFD_GETLK)?.l_type != libc::F_UNLCK as libc::c_short)
}

/// `getrlimit(2)`.
pub(crate) fn getrlimit(resource: u32, out: &mut libc::rlimit) -> SysResult<()> {
    // SAFETY: getrlimit writes the struct we pass.
    Errno::result(unsafe { libc::getrlimit(resource as _, out) }).map(drop)
}

/// Removes `name` in `dir` if it is an empty directory or an empty regular file (never
/// following a symlink); anything else stays.
pub(crate) fn remove_empty(dir: &OwnedFd, name: &str) {
    let Ok(c) = cstr(name.as_bytes()) else {
        return;
    };
    // SAFETY: stat is plain old data filled by fstatat; fds and strings are valid.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        ) != 0
        {
            return;
        }
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR);
            }
            libc::S_IFREG if st.st_size == 0 => {
                libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0);
            }
            _ => {}
        }
    }
}

/// `pidfd_open(2)`: a handle on a process that no pid reuse can redirect.
pub(crate) fn pidfd_open(pid: i32) -> SysResult<OwnedFd> {
    // SAFETY: integer-only syscall returning a new fd that we own.
    let fd = Errno::result(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: fresh fd owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(2)`.
pub(crate) fn pidfd_send_signal(fd: &OwnedFd, signal: i32) -> SysResult<()> {
    // SAFETY: valid pidfd, no siginfo.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })
    .map(drop)
}

/// Waits until the process behind `fd` has exited.
pub(crate) fn pidfd_wait_exit(fd: &OwnedFd) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            _ => return,
        }
    }
}

/// Path bytes as a C string.
pub(crate) fn path_cstr(p: &Path) -> SysResult<CString> {
    cstr(p.as_os_str().as_bytes())
}

#[cfg(test)]
pub(crate) mod recording {
    //! A [`Syscall`] double: records every call as a line of text and answers lookups from a
    //! scripted in-memory tree.

    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, Default)]
    pub struct Recording {
        pub calls: RefCell<Vec<String>>,
        pub tree: RefCell<BTreeMap<String, FileType>>,
        pub files: RefCell<BTreeMap<String, Vec<u8>>>,
        /// Host paths' types (default: directory; the generated /etc files: file).
        pub host: RefCell<BTreeMap<PathBuf, FileType>>,
        /// Calls (by prefix) that fail with the given errno.
        pub fail: RefCell<Vec<(String, Errno)>>,
    }

    impl Recording {
        /// A root with the directories every image has.
        pub fn with_dirs(dirs: &[&str]) -> Self {
            let r = Self::default();
            for d in dirs {
                r.tree.borrow_mut().insert((*d).into(), FileType::Dir);
            }
            r.tree.borrow_mut().insert("/".into(), FileType::Dir);
            r
        }
        pub fn set(&self, path: &str, t: FileType) {
            self.tree.borrow_mut().insert(path.into(), t);
        }
        fn rec(&self, s: String) -> SysResult<()> {
            for (prefix, e) in self.fail.borrow().iter() {
                if s.starts_with(prefix.as_str()) {
                    self.calls.borrow_mut().push(format!("{s} -> {e}"));
                    return Err(*e);
                }
            }
            self.calls.borrow_mut().push(s);
            Ok(())
        }
        pub fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    impl Syscall for Recording {
        fn mount(
            &self,
            source: Option<&Path>,
            target: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> SysResult<()> {
            self.rec(format!(
                "mount {:?} {} {:?} {:?} {:?}",
                source,
                target.display(),
                fstype,
                flags,
                data
            ))
        }
        fn hold_dirs(&self, paths: &[PathBuf]) -> SysResult<Vec<String>> {
            self.rec(format!("hold {paths:?}"))?;
            Ok(paths
                .iter()
                .map(|p| format!("fd:{}", p.display()))
                .collect())
        }
        fn mkdir_host(&self, path: &Path, mode: u32) -> SysResult<()> {
            self.rec(format!("mkdir_host {} {mode:o}", path.display()))
        }
        fn write_host_file(&self, path: &Path, contents: &[u8]) -> SysResult<()> {
            self.rec(format!(
                "write {} {:?}",
                path.display(),
                String::from_utf8_lossy(contents)
            ))
        }
        fn set_root(&self, root: &Path) -> SysResult<()> {
            self.rec(format!("set_root {}", root.display()))
        }
        // `..` resolved lexically, as the kernel does in a tree without symlinks
        fn lookup(&self, path: &str) -> SysResult<Option<FileType>> {
            Ok(self
                .tree
                .borrow()
                .get(&crate::spec::clean_path(path))
                .copied())
        }
        fn mkdir(&self, path: &str, mode: u32) -> SysResult<()> {
            self.rec(format!("mkdir {path} {mode:o}"))?;
            self.set(&crate::spec::clean_path(path), FileType::Dir);
            Ok(())
        }
        fn chown(&self, path: &str, uid: u32, gid: u32) -> SysResult<()> {
            self.rec(format!("chown {path} {uid}:{gid}"))
        }
        fn create_file(&self, path: &str, mode: u32) -> SysResult<()> {
            self.rec(format!("create {path} {mode:o}"))?;
            self.set(path, FileType::File);
            Ok(())
        }
        fn mknod_char(&self, path: &str, mode: u32, major: u32, minor: u32) -> SysResult<()> {
            self.rec(format!("mknod {path} {mode:o} {major}:{minor}"))?;
            self.set(path, FileType::Other);
            Ok(())
        }
        fn symlink(&self, target: &str, link: &str) -> SysResult<()> {
            self.rec(format!("symlink {link} -> {target}"))?;
            self.set(link, FileType::Symlink);
            Ok(())
        }
        fn mount_in_root(
            &self,
            source: Source<'_>,
            target: &str,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> SysResult<()> {
            if self.tree.borrow().get(target) == Some(&FileType::Symlink) {
                return Err(Errno::ELOOP);
            }
            self.rec(format!(
                "mount_in_root {source:?} {target} {fstype:?} {flags:?} {data:?}"
            ))
        }
        fn host_type(&self, path: &Path) -> SysResult<FileType> {
            if let Some(t) = self.host.borrow().get(path) {
                return Ok(*t);
            }
            Ok(match path.file_name().and_then(|n| n.to_str()) {
                Some("hostname" | "hosts" | "resolv.conf") => FileType::File,
                _ => FileType::Dir,
            })
        }
        fn pivot_root(&self) -> SysResult<()> {
            self.rec("pivot_root".into())
        }
        fn sethostname(&self, name: &str) -> SysResult<()> {
            self.rec(format!("sethostname {name}"))
        }
        fn loopback_up(&self) -> SysResult<()> {
            self.rec("lo up".into())
        }
        fn read_file(&self, path: &str, _limit: usize) -> SysResult<Option<Vec<u8>>> {
            Ok(self.files.borrow().get(path).cloned())
        }
        fn chdir_in_root(&self, path: &str) -> SysResult<()> {
            self.rec(format!("chdir_in_root {path}"))
        }
        fn set_rlimit(&self, resource: u32, soft: u64, hard: u64) -> SysResult<()> {
            self.rec(format!("rlimit {resource} {soft} {hard}"))
        }
        fn set_keepcaps(&self, on: bool) -> SysResult<()> {
            self.rec(format!("keepcaps {on}"))
        }
        fn drop_bounding(&self, keep: u64) -> SysResult<()> {
            self.rec(format!("bounding {keep:#x}"))
        }
        fn setgroups(&self, groups: &[u32]) -> SysResult<()> {
            self.rec(format!("setgroups {groups:?}"))
        }
        fn set_ids(&self, uid: u32, gid: u32) -> SysResult<()> {
            self.rec(format!("set_ids {uid} {gid}"))
        }
        fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> SysResult<()> {
            self.rec(format!(
                "capset e={effective:#x} p={permitted:#x} i={inheritable:#x}"
            ))
        }
        fn clear_ambient(&self) -> SysResult<()> {
            self.rec("clear_ambient".into())
        }
        fn set_no_new_privs(&self) -> SysResult<()> {
            self.rec("no_new_privs".into())
        }
    }
}
