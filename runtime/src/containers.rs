//! Container state directories, for `lade run` (without `--rm`), `lade ps -a`, `lade rm` and
//! `lade commit`.
//!
//! Layout, one directory per container under the store's `containers/` dir:
//!
//! ```text
//! <root>/<id>/state.json   ContainerState (written atomically: temp file + rename)
//! <root>/<id>/lock         write-locked (OFD lock) by the lade process running the container;
//!                          holds "PID MONITOR_PID" after `record_pids`
//! <root>/<id>/upper/       the overlay upperdir: the container's changes (what commit takes)
//! <root>/<id>/scratch/     the sandbox's scratch dir while it runs
//! <root>/.names/<name>     symlink to the id (base64url): the name's atomic claim
//! <root>/.trash/<id>/      a removed container, deleted whenever convenient
//! ```
//!
//! A container whose state says running but whose lock nobody holds lost its lade process
//! (killed): [`ContainerStore::list`] reports it as exited with no code. Its sandbox died with
//! it (the init kills the sandbox when its caller goes away), so it can be removed.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sandbox::{ExitStatus, Sandbox};
use crate::{sys, Error, Result};

/// Life cycle of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Created,
    Running {
        pid: i32,
        monitor_pid: i32,
    },
    /// `code` is `None` when lade died before it could record the exit.
    Exited {
        code: Option<i32>,
        finished: u64,
    },
}

/// What `state.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub name: Option<String>,
    /// The image as the user named it (shown by `ps`).
    pub image: String,
    pub command: Vec<String>,
    /// Unix seconds.
    pub created: u64,
    pub status: Status,
    /// The rootfs lowerdirs the container ran on, topmost first.
    pub lowerdirs: Vec<PathBuf>,
    /// Anything else the caller wants back (image id, config for commit, ...).
    pub meta: serde_json::Value,
}

/// The `containers/` directory.
#[derive(Debug, Clone)]
pub struct ContainerStore {
    root: PathBuf,
}

/// One container directory.
#[derive(Debug)]
pub struct Container {
    dir: PathBuf,
    state: ContainerState,
    lock: Option<File>,
}

/// What a new container is made of.
#[derive(Debug, Clone, Default)]
pub struct NewContainer {
    /// The id to use (from [`ContainerStore::new_id`]); `None`: a fresh one.
    pub id: Option<String>,
    pub name: Option<String>,
    pub image: String,
    pub command: Vec<String>,
    pub lowerdirs: Vec<PathBuf>,
    pub meta: serde_json::Value,
}

const TRASH: &str = ".trash";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random_id() -> Result<String> {
    let mut b = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(Error::io("read /dev/urandom for a container id"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A container id (64 hex digits) as base64url (43 characters): short enough for an ext4
/// "fast" symlink, which keeps its target in the inode.
fn encode_id(id: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes: Vec<u8> = (0..id.len() / 2)
        .filter_map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).ok())
        .collect();
    let mut out = String::with_capacity(44);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Inverse of [`encode_id`]; `None` for anything else.
fn decode_id(text: &str) -> Option<String> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    if text.len() != 43 {
        return None;
    }
    let mut bytes = Vec::with_capacity(32);
    for chunk in text.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            bytes.push((n >> (16 - 8 * i)) as u8);
        }
    }
    (bytes.len() == 32).then(|| bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates (or opens) a container's lock file and takes its write lock.
fn lock_new(path: &Path) -> Result<File> {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(Error::io(format!("open {}", path.display())))?;
    if !sys::lock_file(&f).map_err(Error::sys(format!("lock {}", path.display())))? {
        return Err(Error::Container(format!(
            "{} is locked by another lade process",
            path.display()
        )));
    }
    Ok(f)
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && n.as_bytes()[0].is_ascii_alphanumeric()
}

impl ContainerStore {
    /// Opens (creating) the directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(Error::io(format!("create {}", root.display())))?;
        Ok(Self { root })
    }

    /// The directory without creating it (for commands that only read or remove: a missing
    /// directory lists nothing).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A fresh container id (64 hex digits), for callers that need it before
    /// [`ContainerStore::create`] (to derive the hostname, say).
    pub fn new_id() -> Result<String> {
        random_id()
    }

    /// Creates a container directory (id from `new.id`, else a fresh one) and writes its state
    /// (status `Created`).
    pub fn create(&self, new: NewContainer) -> Result<Container> {
        let c = self.prepare(new)?;
        c.save()?;
        Ok(c)
    }

    /// Creates a container directory and locks it, without writing `state.json`: the
    /// container stays out of [`ContainerStore::list`] until [`Container::set_starting`],
    /// [`Container::set_running`] (or
    /// [`Container::save_created`]) writes its state, which saves a write on the fast path of
    /// `lade run`. Its name is claimed at once; the held lock tells other processes the claim
    /// is alive. The caller must keep whatever the container needs (its image) alive by other
    /// means until the state is written (`lade run` holds the store's lock).
    pub fn prepare(&self, new: NewContainer) -> Result<Container> {
        if let Some(n) = &new.name {
            if !valid_name(n) {
                return Err(Error::Container(format!(
                    "invalid container name `{n}`: use letters, digits, `_`, `.` and `-`"
                )));
            }
        }
        let id = match new.id {
            Some(id) => {
                if id.len() != 64 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(Error::Container(format!(
                        "invalid container id `{id}`: 64 lowercase hex digits expected"
                    )));
                }
                id
            }
            None => random_id()?,
        };
        let dir = self.root.join(&id);
        std::fs::create_dir(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let undo = |e: Error| {
            let _ = crate::sandbox::remove_tree(&dir);
            e
        };
        // Locked before the name is claimed: a claim whose holder has neither a state file nor
        // a held lock is one whose creator died.
        let lock = lock_new(&dir.join("lock")).map_err(undo)?;
        if let Some(n) = &new.name {
            self.reserve_name(n, &id).map_err(undo)?;
        }
        Ok(Container {
            dir,
            state: ContainerState {
                id,
                name: new.name,
                image: new.image,
                command: new.command,
                created: now(),
                status: Status::Created,
                lowerdirs: new.lowerdirs,
                meta: new.meta,
            },
            lock: Some(lock),
        })
    }

    /// Claims `name` for `id` atomically: `.names/NAME` is a symlink to the id (encoded short
    /// enough to fit in the inode: no data block to allocate and discard), and creating a
    /// symlink fails when one exists, so two `lade run --name x` at once cannot both win. A
    /// claim whose container is gone (no state file, no lock holder: a create that died) is
    /// taken over.
    fn reserve_name(&self, name: &str, id: &str) -> Result<()> {
        let names = self.root.join(".names");
        let link = names.join(name);
        let target = encode_id(id);
        for attempt in 0..3 {
            match std::os::unix::fs::symlink(&target, &link) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt == 0 => {
                    std::fs::create_dir_all(&names)
                        .map_err(Error::io(format!("create {}", names.display())))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_link(&link)
                        .ok()
                        .and_then(|t| decode_id(&t.to_string_lossy()));
                    if let Some(h) = holder {
                        let dir = self.root.join(&h);
                        if dir.join("state.json").exists() || held_by_someone(&dir)? {
                            return Err(Error::Container(format!(
                                "the container name `{name}` is already in use; remove that \
                                 container or pick another name"
                            )));
                        }
                    }
                    let _ = std::fs::remove_file(&link);
                }
                Err(e) => return Err(Error::io(format!("create {}", link.display()))(e)),
            }
        }
        Err(Error::Container(format!(
            "the container name `{name}` is being claimed by another lade process"
        )))
    }

    /// The id a name claims, if any.
    fn name_holder(&self, name: &str) -> Option<String> {
        let t = std::fs::read_link(self.root.join(".names").join(name)).ok()?;
        decode_id(&t.to_string_lossy())
    }

    /// Every container, oldest first, with the status corrected for dead lade processes.
    pub fn list(&self) -> Result<Vec<ContainerState>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(format!("read {}", self.root.display()))(e)),
        };
        for entry in rd {
            let entry = entry.map_err(Error::io(format!("read {}", self.root.display())))?;
            if entry.file_name().as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let dir = entry.path();
            match load(&dir) {
                Ok(Some(state)) => out.push(state),
                // A directory without a state file is a create that did not finish.
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Finds a container by id, unique id prefix, or name.
    pub fn get(&self, key: &str) -> Result<Container> {
        let all = self.list()?;
        let by_name: Vec<&ContainerState> = all
            .iter()
            .filter(|c| c.name.as_deref() == Some(key))
            .collect();
        let matches: Vec<&ContainerState> = if !by_name.is_empty() {
            by_name
        } else if !key.is_empty() {
            all.iter().filter(|c| c.id.starts_with(key)).collect()
        } else {
            Vec::new()
        };
        match matches.as_slice() {
            [one] => Ok(Container {
                dir: self.root.join(&one.id),
                state: (*one).clone(),
                lock: None,
            }),
            [] => Err(Error::Container(format!(
                "no such container: {key} (see `lade ps -a`)"
            ))),
            _ => Err(Error::Container(format!(
                "`{key}` matches several containers; give more of the id"
            ))),
        }
    }

    /// Sends `signal` to a running container (for `lade stop`/`kill`/`rm -f` from another lade
    /// process). Catchable signals go to the container's init, which forwards them to pid 1;
    /// SIGKILL goes to pid 1 itself, through a pidfd checked to still be that sandbox's pid 1,
    /// and takes the whole sandbox down. The lade process running the container then records
    /// the exit. Errors when the container does not run.
    pub fn signal(&self, key: &str, signal: i32) -> Result<()> {
        let c = self.get(key)?;
        let Status::Running {
            mut monitor_pid,
            mut pid,
        } = c.state.status
        else {
            return Err(Error::Container(format!(
                "container {} is not running",
                c.hostname()
            )));
        };
        if pid == 0 {
            // Marked running before its sandbox started: the pids are in the lock file.
            let text = std::fs::read_to_string(c.dir.join("lock")).unwrap_or_default();
            let mut it = text
                .split_whitespace()
                .map(|n| n.parse::<i32>().unwrap_or(0));
            (pid, monitor_pid) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
            if pid <= 0 || monitor_pid <= 0 {
                return Err(Error::Container(format!(
                    "container {} is still starting; try again",
                    c.hostname()
                )));
            }
        }
        if signal == libc::SIGKILL {
            let fd = match sys::pidfd_open(pid) {
                Ok(fd) => fd,
                Err(nix::errno::Errno::ESRCH) => return Ok(()),
                Err(e) => return Err(Error::sys(format!("pidfd_open {pid}"))(e)),
            };
            // Checked after taking the pidfd, so the answer stays true for it.
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let is_pid1 = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .is_some_and(|ids| ids.split_whitespace().last() == Some("1"));
            if !is_pid1 {
                return Ok(()); // already gone, pid reused
            }
            return match sys::pidfd_send_signal(&fd, libc::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
                Err(e) => Err(Error::sys(format!("kill container {}", c.hostname()))(e)),
            };
        }
        // The lock is held, so the lade process that owns the init is alive and has not reaped
        // it: the init's pid cannot have been reused.
        let sig = nix::sys::signal::Signal::try_from(signal)
            .map_err(Error::sys(format!("signal {signal}")))?;
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(monitor_pid), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(Error::sys(format!("signal container {}", c.hostname()))(e)),
        }
    }

    /// Removes a container and its changes; refuses while it runs.
    pub fn remove(&self, key: &str) -> Result<()> {
        let c = self.get(key)?;
        if matches!(c.state.status, Status::Running { .. }) {
            return Err(Error::Container(format!(
                "container {} is running; stop it first (or use rm -f)",
                &c.state.id[..12]
            )));
        }
        let trash = self.discard(c)?;
        crate::sandbox::remove_tree(&trash)
            .map_err(Error::io(format!("remove {}", trash.display())))
    }

    /// `rm -f`: kills a running container (SIGKILL), waits until the lade process that ran it
    /// has recorded the exit (its lock is free), then removes it.
    pub fn remove_force(&self, key: &str) -> Result<()> {
        let c = self.get(key)?;
        if matches!(c.state.status, Status::Running { .. }) {
            self.signal(c.id(), libc::SIGKILL)?;
            let path = c.dir.join("lock");
            match File::options().write(true).open(&path) {
                Ok(f) => sys::wait_lock_file(&f)
                    .map_err(Error::sys(format!("wait for the lock {}", path.display())))?,
                // Its lade already removed it (`run --rm`).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::io(format!("open {}", path.display()))(e)),
            }
            match self.get(c.id()) {
                Ok(_) => {}
                Err(Error::Container(_)) if !c.dir.exists() => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.remove(c.id())
    }

    /// Takes a finished container out of the store at the cost of one rename: its directory
    /// moves to `.trash/` (gone from [`ContainerStore::list`] at once) and its name is freed.
    /// Returns the moved directory, for the caller to delete now ([`crate::remove_tree`]) or
    /// later ([`ContainerStore::purge_trash`]). A held lock (the running lade's own container)
    /// stays held until `c` is dropped.
    pub fn discard(&self, c: Container) -> Result<PathBuf> {
        let trash = self.root.join(TRASH);
        let dest = trash.join(&c.state.id);
        let moved = match std::fs::rename(&c.dir, &dest) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !trash.exists() => {
                std::fs::create_dir_all(&trash)
                    .map_err(Error::io(format!("create {}", trash.display())))?;
                std::fs::rename(&c.dir, &dest)
            }
            r => r,
        };
        moved.map_err(Error::io(format!(
            "move {} to {}",
            c.dir.display(),
            dest.display()
        )))?;
        if let Some(n) = &c.state.name {
            if self.name_holder(n).as_deref() == Some(c.state.id.as_str()) {
                let _ = std::fs::remove_file(self.root.join(".names").join(n));
            }
        }
        Ok(dest)
    }

    /// The directory removed containers wait in until [`ContainerStore::purge_trash`].
    pub fn trash_dir(&self) -> PathBuf {
        self.root.join(TRASH)
    }

    /// Whether `.trash/` holds anything (one `readdir` entry at most is read).
    pub fn has_trash(&self) -> bool {
        std::fs::read_dir(self.root.join(TRASH)).is_ok_and(|mut rd| rd.next().is_some())
    }

    /// Deletes everything in `.trash/` (containers [`ContainerStore::discard`]ed earlier).
    /// Safe to run from several processes at once.
    pub fn purge_trash(&self) -> Result<()> {
        let trash = self.root.join(TRASH);
        let rd = match std::fs::read_dir(&trash) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("read {}", trash.display()))(e)),
        };
        for e in rd.flatten() {
            let p = e.path();
            crate::sandbox::remove_tree(&p)
                .map_err(Error::io(format!("remove {}", p.display())))?;
        }
        Ok(())
    }
}

fn load(dir: &Path) -> Result<Option<ContainerState>> {
    let path = dir.join("state.json");
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("read {}", path.display()))(e)),
    };
    let mut state: ContainerState = serde_json::from_slice(&text).map_err(|e| {
        Error::Container(format!(
            "corrupt container state {}: {e}; remove that directory",
            path.display()
        ))
    })?;
    if matches!(state.status, Status::Running { .. }) && !held_by_someone(dir)? {
        state.status = Status::Exited {
            code: None,
            finished: 0,
        };
    }
    Ok(Some(state))
}

/// Whether a live lade process holds the container's lock.
fn held_by_someone(dir: &Path) -> Result<bool> {
    let path = dir.join("lock");
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(format!("open {}", path.display()))(e)),
    };
    // Asked without taking the lock, so a `ps` never disturbs a `run`.
    sys::file_is_locked(&f).map_err(Error::sys(format!("test the lock {}", path.display())))
}

impl Container {
    pub fn id(&self) -> &str {
        &self.state.id
    }

    pub fn state(&self) -> &ContainerState {
        &self.state
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The overlay upperdir to give the sandbox (and to commit from).
    pub fn upperdir(&self) -> PathBuf {
        self.dir.join("upper")
    }

    /// The sandbox's scratch dir (same filesystem as the upperdir).
    pub fn scratch(&self) -> PathBuf {
        self.dir.join("scratch")
    }

    /// Docker's default hostname: the first 12 hex digits of the id.
    pub fn hostname(&self) -> &str {
        &self.state.id[..12]
    }

    /// Writes the state as it is (`Created` for a container whose start failed).
    pub fn save_created(&mut self) -> Result<()> {
        self.state.status = Status::Created;
        self.save()
    }

    /// Records the container as running *before* its sandbox starts (the one write of
    /// `state.json` on `lade run`'s fast path), so that it is listed, and a GC root, before its
    /// command can run or print anything. The pids follow in the lock file
    /// ([`Container::record_pids`]); until then `signal` answers "still starting". Takes the
    /// lock if [`ContainerStore::prepare`] did not.
    pub fn set_starting(&mut self) -> Result<()> {
        self.take_lock()?;
        self.state.status = Status::Running {
            pid: 0,
            monitor_pid: 0,
        };
        self.save()
    }

    /// Writes the sandbox's pids into the held lock file (after [`Container::set_starting`]):
    /// a write to an open file, no second `state.json`.
    pub fn record_pids(&mut self, sandbox: &Sandbox) -> Result<()> {
        use std::io::Write;
        let path = self.dir.join("lock");
        let Some(f) = self.lock.as_mut() else {
            return Err(Error::Container(format!(
                "{} is not held by this process",
                path.display()
            )));
        };
        writeln!(f, "{} {}", sandbox.pid(), sandbox.monitor_pid())
            .map_err(Error::io(format!("write {}", path.display())))
    }

    /// Takes the container's lock unless this process holds it already.
    fn take_lock(&mut self) -> Result<()> {
        if self.lock.is_none() {
            let path = self.dir.join("lock");
            self.lock = Some(lock_new(&path).map_err(|_| {
                Error::Container(format!("container {} is already running", self.hostname()))
            })?);
        }
        Ok(())
    }

    fn save(&self) -> Result<()> {
        let tmp = self.dir.join("state.json.tmp");
        let body = serde_json::to_vec_pretty(&self.state)
            .map_err(|e| Error::Container(format!("encode container state: {e}")))?;
        std::fs::write(&tmp, body).map_err(Error::io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, self.dir.join("state.json"))
            .map_err(Error::io(format!("rename {}", tmp.display())))
    }

    /// Replaces the caller's metadata (e.g. after `commit` moved the upperdir into a layer).
    pub fn set_meta(&mut self, meta: serde_json::Value) -> Result<()> {
        self.state.meta = meta;
        self.save()
    }

    /// Records that `sandbox` runs this container; holds the lock until [`Container::set_exited`]
    /// or drop, so `ps` can tell a live container from one whose lade died.
    pub fn set_running(&mut self, sandbox: &Sandbox) -> Result<()> {
        self.take_lock()?;
        self.state.status = Status::Running {
            pid: sandbox.pid(),
            monitor_pid: sandbox.monitor_pid(),
        };
        self.save()
    }

    /// Records the exit and releases the lock.
    pub fn set_exited(&mut self, status: ExitStatus) -> Result<()> {
        self.state.status = Status::Exited {
            code: Some(status.code()),
            finished: now(),
        };
        let r = self.save();
        self.lock = None;
        r
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn create_list_get_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContainerStore::open(tmp.path().join("containers")).unwrap();
        let a = store
            .create(NewContainer {
                name: Some("web".into()),
                image: "busybox".into(),
                command: vec!["sh".into()],
                ..NewContainer::default()
            })
            .unwrap();
        assert_eq!(a.id().len(), 64);
        assert_eq!(a.hostname().len(), 12);
        assert!(a.upperdir().starts_with(a.dir()));
        assert_eq!(store.list().unwrap().len(), 1);
        assert_eq!(store.get("web").unwrap().id(), a.id());
        assert_eq!(store.get(&a.id()[..6]).unwrap().id(), a.id());
        assert!(store.get("nope").is_err());
        assert!(store
            .create(NewContainer {
                name: Some("web".into()),
                ..NewContainer::default()
            })
            .unwrap_err()
            .to_string()
            .contains("already in use"));
        assert!(store
            .create(NewContainer {
                name: Some("../x".into()),
                ..NewContainer::default()
            })
            .is_err());
        store.remove("web").unwrap();
        assert!(store.list().unwrap().is_empty());
        // The name is free again, and a claim left by a create that died is taken over.
        let again = store
            .create(NewContainer {
                name: Some("web".into()),
                ..NewContainer::default()
            })
            .unwrap();
        crate::sandbox::remove_tree(again.dir()).unwrap();
        store
            .create(NewContainer {
                name: Some("web".into()),
                ..NewContainer::default()
            })
            .unwrap();
    }

    #[test]
    fn ids_encode_short_and_back() {
        let id = random_id().unwrap();
        let e = encode_id(&id);
        assert_eq!(e.len(), 43);
        assert_eq!(decode_id(&e).as_deref(), Some(id.as_str()));
        let zeros = "0".repeat(64);
        assert_eq!(decode_id(&encode_id(&zeros)).unwrap(), zeros);
        let ff = "f".repeat(64);
        assert_eq!(decode_id(&encode_id(&ff)).unwrap(), ff);
        assert_eq!(decode_id("short"), None);
        assert_eq!(decode_id(&"*".repeat(43)), None);
    }

    #[test]
    fn a_prepared_container_holds_its_name_until_its_creator_goes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContainerStore::open(tmp.path()).unwrap();
        let new = || NewContainer {
            name: Some("n".into()),
            ..NewContainer::default()
        };
        let c = store.prepare(new()).unwrap();
        // Not listed yet, but the name is taken while its lock is held.
        assert!(store.list().unwrap().is_empty());
        assert!(store.create(new()).is_err());
        // Its creator died (lock released, no state): the claim is taken over.
        drop(c);
        store.create(new()).unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn starting_containers_are_listed_running_and_not_yet_signalled() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContainerStore::open(tmp.path()).unwrap();
        let mut c = store.prepare(NewContainer::default()).unwrap();
        c.set_starting().unwrap();
        assert!(matches!(
            store.list().unwrap()[0].status,
            Status::Running { .. }
        ));
        let err = store.signal(c.id(), libc::SIGTERM).unwrap_err().to_string();
        assert!(err.contains("still starting"), "{err}");
        c.save_created().unwrap();
        assert_eq!(store.list().unwrap()[0].status, Status::Created);
    }

    #[test]
    fn running_without_a_lock_holder_reads_as_exited() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContainerStore::open(tmp.path()).unwrap();
        let mut c = store.create(NewContainer::default()).unwrap();
        // Simulate a lade that recorded "running" and died (lock released).
        c.lock = None;
        c.state.status = Status::Running {
            pid: 1,
            monitor_pid: 1,
        };
        c.save().unwrap();
        let listed = store.list().unwrap();
        assert_eq!(
            listed[0].status,
            Status::Exited {
                code: None,
                finished: 0
            }
        );
        // With the lock held it is running, and cannot be removed.
        let f = File::create(c.dir().join("lock")).unwrap();
        assert!(sys::lock_file(&f).unwrap());
        let other = File::open(c.dir().join("lock")).unwrap();
        assert!(sys::file_is_locked(&other).unwrap());
        assert!(!sys::lock_file(
            &std::fs::File::options()
                .write(true)
                .open(c.dir().join("lock"))
                .unwrap()
        )
        .unwrap());
        assert!(matches!(
            store.list().unwrap()[0].status,
            Status::Running { .. }
        ));
        assert!(store.remove(c.id()).is_err());
        drop(f);
        store.remove(c.id()).unwrap();
    }
}
