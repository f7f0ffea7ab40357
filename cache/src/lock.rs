//! File locks (flock(2) through nix, already a workspace dependency): advisory, whole-file,
//! released by the kernel when the process dies (also on SIGKILL), so a crashed `lade` never
//! leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, IoContext, Result};

/// A held lock; released on drop.
#[derive(Debug)]
pub struct LockGuard {
    _lock: Flock<File>,
}

impl LockGuard {
    /// Converts the held lock to `kind` (waiting if needed).
    pub fn relock(&self, kind: LockKind, path: &Path) -> Result<()> {
        let arg = match kind {
            LockKind::Shared => FlockArg::LockShared,
            LockKind::Exclusive => FlockArg::LockExclusive,
        };
        self._lock.relock(arg).map_err(|e| Error::Io {
            what: "lock",
            path: path.to_path_buf(),
            source: e.into(),
        })
    }
}

/// Lock kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

/// Takes a lock on `path` (created if missing). With `wait == false` returns [`Error::Busy`]
/// instead of blocking.
pub fn lock(path: &Path, kind: LockKind, wait: bool, busy: &Path) -> Result<LockGuard> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .ctx("open lock file", path)?;
    let arg = match (kind, wait) {
        (LockKind::Shared, true) => FlockArg::LockShared,
        (LockKind::Shared, false) => FlockArg::LockSharedNonblock,
        (LockKind::Exclusive, true) => FlockArg::LockExclusive,
        (LockKind::Exclusive, false) => FlockArg::LockExclusiveNonblock,
    };
    match Flock::lock(f, arg) {
        Ok(l) => Ok(LockGuard { _lock: l }),
        Err((_, Errno::EWOULDBLOCK)) => Err(Error::Busy(busy.to_path_buf())),
        // Interrupted by a signal: try once more.
        Err((file, Errno::EINTR)) => lock_retry(file, arg, path),
        Err((_, e)) => Err(Error::Io {
            what: "lock",
            path: path.to_path_buf(),
            source: e.into(),
        }),
    }
}

fn lock_retry(f: File, arg: FlockArg, path: &Path) -> Result<LockGuard> {
    Flock::lock(f, arg)
        .map(|l| LockGuard { _lock: l })
        .map_err(|(_, e)| Error::Io {
            what: "lock",
            path: path.to_path_buf(),
            source: e.into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_coexist_exclusive_excludes() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("lock");
        let a = lock(&p, LockKind::Shared, false, t.path()).unwrap();
        let _b = lock(&p, LockKind::Shared, false, t.path()).unwrap();
        assert!(matches!(
            lock(&p, LockKind::Exclusive, false, t.path()),
            Err(Error::Busy(_))
        ));
        drop(a);
        drop(_b);
        let _c = lock(&p, LockKind::Exclusive, false, t.path()).unwrap();
        assert!(matches!(
            lock(&p, LockKind::Shared, false, t.path()),
            Err(Error::Busy(_))
        ));
    }
}
