//! Removing a directory tree that may hold directories its owner cannot write or search.
//!
//! One source file compiled into two crates: `lade-cache` owns it, `lade-runtime` includes it
//! with `#[path]` (neither crate may depend on the other, and both remove such trees).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fchmodat, fstat, FchmodatFlags, Mode, SFlag};

/// Removes a directory tree. When that is refused for want of permission (`EACCES`/`EPERM`:
/// a snapshot unpacked by an unprivileged user keeps an image's `0555` directories, overlayfs
/// leaves its `work/` at mode 000), gives the owner `rwx` on every directory of the tree and
/// tries again; any other error (a busy mount point, a read-only filesystem) is returned as
/// is, with no mode changed. Symlinks are never followed. Missing is fine.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if is_permission(&e) => {
            open_up(path);
            std::fs::remove_dir_all(path)
        }
        Err(e) => Err(e),
    }
}

fn is_permission(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EACCES | Errno::EPERM)
    )
}

/// Gives the owner `rwx` on `path` and every directory below it, walking by file descriptor:
/// each directory is opened with `O_NOFOLLOW` relative to the descriptor of the one above it
/// and changed through its own descriptor, so a directory renamed or swapped for a symlink
/// meanwhile can never send the walk (or a chmod) outside the tree. Best effort.
fn open_up(path: &Path) {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    if let Ok(p) = openat(
        AT_FDCWD,
        parent,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        open_up_at(&p, name);
    }
}

fn open_up_at(parent: &OwnedFd, name: &OsStr) {
    // O_NOFOLLOW|O_DIRECTORY: a symlink (or anything else that is no directory) is refused.
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match openat(parent, name, flags | OFlag::O_RDONLY, Mode::empty()) {
        Ok(fd) => fd,
        // No read permission (mode 000, 0300): open the inode itself with O_PATH, chmod it
        // through its /proc magic link (fchmod refuses O_PATH descriptors; the link names
        // exactly this inode, no path is looked up again), then open it for reading.
        Err(Errno::EACCES) => {
            let Ok(p) = openat(parent, name, flags | OFlag::O_PATH, Mode::empty()) else {
                return;
            };
            let Ok(st) = fstat(&p) else {
                return;
            };
            let proc = format!("/proc/self/fd/{}", p.as_raw_fd());
            if fchmodat(
                AT_FDCWD,
                proc.as_str(),
                Mode::from_bits_truncate((st.st_mode & 0o7777) | 0o700),
                FchmodatFlags::FollowSymlink,
            )
            .is_err()
            {
                return;
            }
            let Ok(fd) = openat(&p, ".", flags | OFlag::O_RDONLY, Mode::empty()) else {
                return;
            };
            fd
        }
        Err(_) => return,
    };
    let Ok(st) = fstat(&fd) else {
        return;
    };
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
        return;
    }
    if st.st_mode & 0o700 != 0o700
        && fchmod(&fd, Mode::from_bits_truncate((st.st_mode & 0o7777) | 0o700)).is_err()
    {
        return;
    }
    let Ok(here) = fd.try_clone() else {
        return;
    };
    let Ok(mut dir) = Dir::from_fd(fd) else {
        return;
    };
    let mut subdirs = Vec::new();
    for e in dir.iter().flatten() {
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." && matches!(e.file_type(), Some(Type::Directory) | None) {
            subdirs.push(n.to_vec());
        }
    }
    drop(dir);
    for n in subdirs {
        open_up_at(&here, OsStr::from_bytes(&n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    const NOBODY: u32 = 65534;

    /// Runs `f` on a new thread whose effective ids are `NOBODY` (and which so has no
    /// capabilities): raw `setres[ug]id` syscalls change only the calling thread, unlike the
    /// libc wrappers, so the test thread and the rest of the process stay root.
    #[allow(unsafe_code)]
    fn as_nobody<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let keep: nix::libc::c_long = -1;
                let id = nix::libc::c_long::from(NOBODY);
                // SAFETY: setresgid/setresuid take three integer ids and touch no memory.
                let r = unsafe {
                    (
                        nix::libc::syscall(nix::libc::SYS_setresgid, keep, id, keep),
                        nix::libc::syscall(nix::libc::SYS_setresuid, keep, id, keep),
                    )
                };
                assert_eq!(r, (0, 0), "this test needs root (setresuid)");
                f()
            })
            .join()
            .unwrap()
        })
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn chmod(p: &Path, m: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    }

    /// An unprivileged owner removes a tree with directories it cannot write (0555), list
    /// (0300) or even search (000); a symlink in it to a locked directory elsewhere is removed,
    /// never followed (that directory keeps its mode and content).
    #[test]
    fn unprivileged_locked_tree_is_removed_and_links_are_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        let outside = t.path().join("outside");
        for d in ["tree/a/z/y", "tree/b/c", "outside/keep"] {
            fs::create_dir_all(t.path().join(d)).unwrap();
        }
        fs::write(tree.join("a/f"), b"f").unwrap();
        fs::write(tree.join("a/z/y/g"), b"g").unwrap();
        fs::write(tree.join("b/c/h"), b"h").unwrap();
        symlink(&outside, tree.join("a/link")).unwrap();
        symlink(&outside, tree.join("link")).unwrap();
        for p in walk(t.path()) {
            std::os::unix::fs::lchown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        for (d, m) in [
            ("tree/a/z/y", 0o000),
            ("tree/a/z", 0o000),
            ("tree/a", 0o555),
            ("tree/b/c", 0o300),
            ("tree/b", 0o300),
            ("outside/keep", 0o500),
            ("outside", 0o500),
        ] {
            chmod(&t.path().join(d), m);
        }
        as_nobody(|| {
            assert!(fs::remove_dir_all(&tree).is_err(), "locked tree");
            remove_tree(&tree).unwrap();
        });
        assert!(!tree.exists());
        assert_eq!(
            (mode(&outside), mode(&outside.join("keep"))),
            (0o500, 0o500)
        );
        // Missing is fine.
        remove_tree(&tree).unwrap();
    }

    fn walk(p: &Path) -> Vec<std::path::PathBuf> {
        let mut out = vec![p.to_path_buf()];
        if fs::symlink_metadata(p).unwrap().is_dir() {
            for e in fs::read_dir(p).unwrap() {
                out.extend(walk(&e.unwrap().path()));
            }
        }
        out
    }

    /// A removal that fails for another reason than permission (here a mount point, EBUSY)
    /// is an error and changes no mode on the way.
    #[test]
    fn other_errors_change_no_mode() {
        use nix::mount::{mount, umount2, MntFlags, MsFlags};
        struct Unmount(std::path::PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = umount2(&self.0, MntFlags::MNT_DETACH);
            }
        }
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        let m = tree.join("d/m");
        fs::create_dir_all(&m).unwrap();
        mount(
            Some("tmpfs"),
            &m,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .expect("this test needs root (mount a tmpfs)");
        let guard = Unmount(m.clone());
        chmod(&tree.join("d"), 0o500);
        let e = remove_tree(&tree).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::EBUSY), "{e}");
        assert_eq!(mode(&tree.join("d")), 0o500);
        drop(guard);
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
    }
}
