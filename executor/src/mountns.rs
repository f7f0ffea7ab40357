//! Private mount namespaces for file operations.
//!
//! COPY/ADD must see the parent's filesystem (existing directories, symlinks, `/etc/passwd` for
//! `--chown`) and write only the difference. That is exactly an overlay mount of the parent's
//! snapshots with a fresh upperdir, so the op mounts one, works inside it with path-safe
//! `*at` calls, and keeps the upperdir. The mount must never be visible on the host: the work
//! runs on a dedicated thread that first calls `unshare(CLONE_NEWNS)` (allowed in a
//! multi-threaded process: it gives that thread its own copy of the mount table) and makes every
//! mount private. When the thread ends, its namespace and every mount in it disappear, even if
//! the thread panicked or the process is killed. Needs CAP_SYS_ADMIN (lade runs as root).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::Mode;

use crate::{Error, Result};

/// Runs `f` on a new thread inside a private mount namespace and returns its result.
pub fn in_private_mount_ns<R: Send>(f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("lade-fileop".into())
            .spawn_scoped(s, || -> Result<R> {
                unshare(CloneFlags::CLONE_NEWNS).map_err(|e| Error::Mount {
                    what: "create a private mount namespace (lade needs to run as root)".into(),
                    source: e,
                })?;
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&str>,
                )
                .map_err(|e| Error::Mount {
                    what: "make the mount namespace private".into(),
                    source: e,
                })?;
                f()
            })
            .map_err(|e| Error::Io {
                what: "start a file-operation thread",
                path: PathBuf::from("<thread>"),
                source: e,
            })?;
        h.join()
            .unwrap_or_else(|_| Err(Error::Invalid("file-operation thread panicked".into())))
    })
}

/// Snapshot paths (bottom first) with repeated layers dropped, keeping the topmost
/// occurrence: overlayfs refuses the same lowerdir twice (ELOOP), and a layer that appears
/// again higher up already shows (and hides) everything its lower copy would.
pub fn dedup_lowers(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::with_capacity(paths.len());
    for (i, p) in paths.iter().enumerate() {
        if !paths[i + 1..].contains(p) {
            out.push(p.clone());
        }
    }
    out
}

/// Directories held open for the life of a mount call, named `/proc/self/fd/N` so that long
/// store paths do not overflow the kernel's one-page mount data.
struct Held(Vec<OwnedFd>);

impl Held {
    fn name(&mut self, p: &Path) -> Result<String> {
        let fd = open(
            p,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::Mount {
            what: format!("open {}", p.display()),
            source: e,
        })?;
        let name = format!("/proc/self/fd/{}", fd.as_raw_fd());
        self.0.push(fd);
        Ok(name)
    }
}

/// Mounts an overlay on `target` (call only inside [`in_private_mount_ns`]). `lowers` are
/// snapshot directories bottom first (as the store returns them); with `upper = Some((upper,
/// work))` the mount is writable and changes land in `upper`, otherwise it is read-only.
/// `empty` is an empty directory used when there is no lower layer (or only one for a
/// read-only mount, which overlayfs refuses).
pub fn mount_overlay(
    target: &Path,
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    empty: &Path,
) -> Result<()> {
    let mut held = Held(Vec::new());
    let mut names = Vec::new();
    // overlayfs wants the topmost lowerdir first
    for l in dedup_lowers(lowers).iter().rev() {
        names.push(held.name(l)?);
    }
    if names.is_empty() || (upper.is_none() && names.len() == 1) {
        names.push(held.name(empty)?);
    }
    let mut data = format!("lowerdir={}", names.join(":"));
    if let Some((u, w)) = upper {
        data.push_str(&format!(
            ",upperdir={},workdir={}",
            held.name(u)?,
            held.name(w)?
        ));
    }
    data.push_str(",index=off,redirect_dir=off,metacopy=off");
    let mut flags = MsFlags::empty();
    if upper.is_none() {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|e| Error::Mount {
        what: format!(
            "mount an overlay of {} layers on {} (is overlayfs available?)",
            lowers.len(),
            target.display()
        ),
        source: e,
    })?;
    drop(held);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_keeps_topmost() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            dedup_lowers(&[p("a"), p("e"), p("b"), p("e"), p("c")]),
            [p("a"), p("b"), p("e"), p("c")]
        );
    }
}
