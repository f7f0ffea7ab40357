//! Container state directories, for `lade run` (without `--rm`), `lade ps -a`, `lade rm` and
//! `lade commit`.
//!
//! Layout, one directory per container under the store's `containers/` dir:
//!
//! ```text
//! <root>/<id>/state.json   ContainerState (written atomically: temp file + rename)
//! <root>/<id>/lock         write-locked (OFD lock) by the lade process running the container
//! <root>/<id>/upper/       the overlay upperdir: the container's changes (what commit takes)
//! <root>/<id>/scratch/     the sandbox's scratch dir while it runs
//! <root>/.names/<name>      symlink to the id: the name's atomic claim
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
    pub name: Option<String>,
    pub image: String,
    pub command: Vec<String>,
    pub lowerdirs: Vec<PathBuf>,
    pub meta: serde_json::Value,
}

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

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a container directory with a fresh id (64 hex digits).
    pub fn create(&self, new: NewContainer) -> Result<Container> {
        if let Some(n) = &new.name {
            if !valid_name(n) {
                return Err(Error::Container(format!(
                    "invalid container name `{n}`: use letters, digits, `_`, `.` and `-`"
                )));
            }
        }
        let id = random_id()?;
        if let Some(n) = &new.name {
            self.reserve_name(n, &id)?;
        }
        let dir = self.root.join(&id);
        std::fs::create_dir(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let c = Container {
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
            lock: None,
        };
        c.save()?;
        Ok(c)
    }

    /// Claims `name` for `id` atomically: `.names/NAME` is a symlink to the id, and creating a
    /// symlink fails when one exists, so two `lade run --name x` at once cannot both win. A
    /// claim whose container directory is gone (a create that died) is taken over.
    fn reserve_name(&self, name: &str, id: &str) -> Result<()> {
        let names = self.root.join(".names");
        std::fs::create_dir_all(&names)
            .map_err(Error::io(format!("create {}", names.display())))?;
        let link = names.join(name);
        for _ in 0..2 {
            match std::os::unix::fs::symlink(id, &link) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_link(&link).unwrap_or_default();
                    if self.root.join(&holder).join("state.json").exists() {
                        return Err(Error::Container(format!(
                            "the container name `{name}` is already in use; remove that \
                             container or pick another name"
                        )));
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
        let Status::Running { monitor_pid, pid } = c.state.status else {
            return Err(Error::Container(format!(
                "container {} is not running",
                c.hostname()
            )));
        };
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
                "container {} is running; stop it first",
                &c.state.id[..12]
            )));
        }
        crate::sandbox::remove_tree(&c.dir)
            .map_err(Error::io(format!("remove {}", c.dir.display())))?;
        if let Some(n) = &c.state.name {
            let link = self.root.join(".names").join(n);
            if std::fs::read_link(&link).is_ok_and(|t| t.as_os_str() == c.state.id.as_str()) {
                let _ = std::fs::remove_file(&link);
            }
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

    fn save(&self) -> Result<()> {
        let tmp = self.dir.join("state.json.tmp");
        let body = serde_json::to_vec_pretty(&self.state)
            .map_err(|e| Error::Container(format!("encode container state: {e}")))?;
        std::fs::write(&tmp, body).map_err(Error::io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, self.dir.join("state.json"))
            .map_err(Error::io(format!("rename {}", tmp.display())))
    }

    /// Records that `sandbox` runs this container; holds the lock until [`Container::set_exited`]
    /// or drop, so `ps` can tell a live container from one whose lade died.
    pub fn set_running(&mut self, sandbox: &Sandbox) -> Result<()> {
        let path = self.dir.join("lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io(format!("open {}", path.display())))?;
        if !sys::lock_file(&f).map_err(Error::sys(format!("lock {}", path.display())))? {
            return Err(Error::Container(format!(
                "container {} is already running",
                self.hostname()
            )));
        }
        self.lock = Some(f);
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
    fn running_without_a_lock_holder_reads_as_exited() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContainerStore::open(tmp.path()).unwrap();
        let mut c = store.create(NewContainer::default()).unwrap();
        // Simulate a lade that recorded "running" and died (lock released).
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
