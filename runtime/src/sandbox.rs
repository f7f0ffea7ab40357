//! The caller's side: [`Runtime::spawn`] prepares the host-side directories, starts the init
//! (a re-exec of the lade binary) and returns a [`Sandbox`] once the command runs; the sandbox
//! is then signalled, killed and waited for, and [`Sandbox::wait`] cleans up.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::init::INIT_ARG;
use crate::plan::{self, HostFacts};
use crate::proto::{Channel, FromInit, ToInit};
pub use crate::rmtree::remove_tree;
use crate::spec::{Rootfs, SandboxSpec};
use crate::sys::{self, ChildFd};
use crate::{Error, Result};

/// How the sandboxed process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
}

impl ExitStatus {
    /// The shell-style code: the exit code, or 128 + signal (what `docker run` returns).
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled(s) => 128 + s,
        }
    }

    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exit code {c}"),
            ExitStatus::Signaled(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// Where one of the sandbox's stdio streams comes from.
#[derive(Debug, Default)]
pub enum Stdio {
    /// The caller's own fd of the same number.
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
    /// This fd (a pipe end, a file, a socket).
    Fd(OwnedFd),
}

/// The sandbox's stdin, stdout and stderr (ignored when the process has a tty).
#[derive(Debug, Default)]
pub struct StdioSet {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

/// Starts sandboxes.
#[derive(Debug, Clone)]
pub struct Runtime {
    init_binary: PathBuf,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    /// Re-executes the running binary (`/proc/self/exe`) as the init: its `main` must call
    /// [`crate::maybe_run_init`] first.
    pub fn new() -> Self {
        Self {
            init_binary: PathBuf::from("/proc/self/exe"),
        }
    }

    /// Uses another binary as the init (tests, tools); it must call
    /// [`crate::maybe_run_init`] first thing in `main`.
    pub fn with_init_binary(path: impl Into<PathBuf>) -> Self {
        Self {
            init_binary: path.into(),
        }
    }

    /// Starts the sandbox and returns once its command runs (after `execve` succeeded), or
    /// with [`Error::Start`] when the setup or the exec failed, in which case nothing is left
    /// behind (scratch and upperdir removed).
    ///
    /// Blocks for the few milliseconds of the setup: call it from a blocking context
    /// (`spawn_blocking`) in async code. Safe to call from many threads at once.
    pub fn spawn(&self, spec: &SandboxSpec, stdio: StdioSet) -> Result<Sandbox> {
        plan::plan(
            spec,
            HostFacts {
                euid: nix::unistd::geteuid().as_raw(),
                egid: nix::unistd::getegid().as_raw(),
            },
        )?;
        check_rlimits(spec)?;
        prepare_host(spec)?;
        // Where mount stubs land (a read-only dir rootfs is made read-only only after the
        // mounts, so it can get stubs too).
        let writable_root = match &spec.rootfs {
            Rootfs::Overlay { upperdir, .. } => Some(upperdir.clone()),
            Rootfs::Dir { path, .. } => Some(path.clone()),
        };
        let upperdir = match &spec.rootfs {
            Rootfs::Overlay { upperdir, .. } => Some(upperdir.clone()),
            Rootfs::Dir { .. } => None,
        };
        let undo = || {
            if let Some(u) = &upperdir {
                let _ = remove_tree(u);
            }
            let _ = remove_tree(&spec.scratch);
        };
        let (ours, theirs) = match socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        ) {
            Ok(p) => p,
            Err(e) => {
                undo();
                return Err(Error::sys("create the sandbox socket")(e));
            }
        };
        let ch = Channel::new(ours);
        // Queue the spec before the init exists (the socket buffer holds it when it is not
        // huge), so the init finds it waiting instead of waiting for it.
        let frame = match Channel::encode(&ToInit::Spec(Box::new(spec.clone()))) {
            Ok(f) => f,
            Err(e) => {
                undo();
                return Err(e);
            }
        };
        let queued = frame.len() <= 64 << 10;
        if queued {
            if let Err(e) = ch.send_frame(&frame, None) {
                undo();
                return Err(e);
            }
        }
        let fd = |s: &Stdio| match s {
            Stdio::Inherit => ChildFd::Inherit,
            Stdio::Null => ChildFd::Null,
            Stdio::Fd(f) => ChildFd::Fd(f.as_raw_fd()),
        };
        let monitor = sys::spawn_init(
            &self.init_binary,
            INIT_ARG,
            theirs.as_raw_fd(),
            [fd(&stdio.stdin), fd(&stdio.stdout), fd(&stdio.stderr)],
        );
        drop(theirs);
        drop(stdio);
        let monitor = match monitor {
            Ok(m) => m,
            Err(e) => {
                undo();
                return Err(Error::Sys {
                    what: format!("start the sandbox init {}", self.init_binary.display()),
                    errno: e,
                });
            }
        };
        let mut sandbox = Sandbox {
            monitor: Some(monitor),
            pid: 0,
            pidfd: None,
            // Our unreaped child: the pidfd is certainly its.
            monitor_fd: sys::pidfd_open(monitor.as_raw()).ok().map(Arc::new),
            ch,
            pty: None,
            stubs: Vec::new(),
            writable_root,
            upperdir,
            scratch: spec.scratch.clone(),
            done: false,
        };
        if !queued {
            if let Err(e) = sandbox.ch.send_frame(&frame, None) {
                let _ = sandbox.finish(true);
                return Err(e);
            }
        }
        loop {
            match sandbox.ch.recv::<FromInit>() {
                Ok(Some(FromInit::Stubs(s))) => sandbox.stubs.extend(s),
                Ok(Some(FromInit::Pty)) => sandbox.pty = sandbox.ch.take_fd(),
                Ok(Some(FromInit::Started { pid })) => {
                    sandbox.pid = pid;
                    sandbox.pidfd = sandbox.ch.take_fd().map(Arc::new);
                    return Ok(sandbox);
                }
                Ok(Some(FromInit::Failed { kind, message })) => {
                    let _ = sandbox.finish(true);
                    return Err(Error::Start { kind, message });
                }
                Ok(Some(FromInit::Exited(_)) | None) | Err(_) => {
                    let status = sandbox.finish(true);
                    return Err(Error::Protocol(format!(
                        "the sandbox init ended before starting the command ({})",
                        match status {
                            Ok(s) => s.to_string(),
                            Err(e) => e.to_string(),
                        }
                    )));
                }
            }
        }
    }
}

fn check_rlimits(spec: &SandboxSpec) -> Result<()> {
    for r in &spec.process.rlimits {
        let res = plan::rlimit_resource(&r.name)?;
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        sys::getrlimit(res, &mut cur).map_err(Error::sys(format!("getrlimit {}", r.name)))?;
        if r.hard > cur.rlim_max {
            return Err(Error::InvalidSpec(format!(
                "rlimit {}: hard limit {} is above the host's hard limit {}",
                r.name, r.hard, cur.rlim_max
            )));
        }
    }
    Ok(())
}

fn prepare_host(spec: &SandboxSpec) -> Result<()> {
    let mkdir = |p: &Path| -> Result<()> {
        std::fs::create_dir(p).map_err(|e| Error::Io {
            what: if e.kind() == std::io::ErrorKind::AlreadyExists {
                format!(
                    "create {}: it already exists; every sandbox needs a fresh directory",
                    p.display()
                )
            } else {
                format!("create {}", p.display())
            },
            source: e,
        })
    };
    mkdir(&spec.scratch)?;
    if let Rootfs::Overlay { upperdir, .. } = &spec.rootfs {
        if let Err(e) = mkdir(upperdir) {
            let _ = std::fs::remove_dir(&spec.scratch);
            return Err(e);
        }
    }
    Ok(())
}

/// What a finished sandbox leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub status: ExitStatus,
    /// The overlay upperdir holding every change the process made (whiteouts as 0:0 character
    /// devices, opaque dirs with `trusted.overlay.opaque`, or `user.overlay.opaque` in a user
    /// namespace), mount-point stubs removed; `None` for a plain-directory rootfs.
    pub upperdir: Option<PathBuf>,
}

/// A running sandbox. Dropping it without [`Sandbox::wait`] kills it and cleans up.
#[derive(Debug)]
pub struct Sandbox {
    monitor: Option<Pid>,
    pid: i32,
    /// pidfd on pid 1 (from the init), to make sure it is gone even if the init is not.
    pidfd: Option<Arc<OwnedFd>>,
    /// pidfd on the init.
    monitor_fd: Option<Arc<OwnedFd>>,
    ch: Channel,
    pty: Option<OwnedFd>,
    stubs: Vec<String>,
    writable_root: Option<PathBuf>,
    upperdir: Option<PathBuf>,
    scratch: PathBuf,
    done: bool,
}

impl Sandbox {
    /// The sandbox's pid 1 as the host sees it.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The init process (outside the sandbox) that forwards signals and reports the exit.
    pub fn monitor_pid(&self) -> i32 {
        self.monitor.map_or(0, Pid::as_raw)
    }

    /// The pty master when the process asked for a tty (once).
    pub fn take_pty(&mut self) -> Option<OwnedFd> {
        self.pty.take()
    }

    /// Sends `signal` to the sandbox's pid 1 (catchable signals through the init, which
    /// forwards them; SIGKILL straight to pid 1). As with docker, a pid 1 without a handler
    /// ignores everything but SIGKILL; `--init` forwards to the command.
    pub fn signal(&self, signal: i32) -> Result<()> {
        self.signaller().signal(signal)
    }

    /// Kills every process of the sandbox (SIGKILL to pid 1; the kernel takes the rest of its
    /// pid namespace).
    pub fn kill(&self) -> Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// A handle that signals this sandbox from other threads (a signal-forwarding thread of
    /// `lade run`) while this one waits. It works through pidfds, so once the sandbox is gone
    /// it is a no-op, never a signal to a recycled pid.
    pub fn signaller(&self) -> Signaller {
        Signaller {
            monitor: self.monitor_fd.clone(),
            pid1: self.pidfd.clone(),
        }
    }

    /// Waits until pid 1 has exited (every process of the sandbox is then gone and its mounts
    /// with its mount namespace), removes the mount-point stubs from the upperdir and the
    /// scratch dir, and returns the status and the upperdir.
    pub fn wait(mut self) -> Result<Finished> {
        let status = self.finish(false)?;
        Ok(Finished {
            status,
            upperdir: self.upperdir.clone(),
        })
    }

    fn finish(&mut self, failed_start: bool) -> Result<ExitStatus> {
        self.done = true;
        let mut reported = None;
        loop {
            match self.ch.recv::<FromInit>() {
                Ok(Some(FromInit::Exited(s))) => reported = Some(s),
                Ok(Some(FromInit::Stubs(s))) => self.stubs.extend(s),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let waited = match self.monitor.take() {
            Some(m) => loop {
                match waitpid(m, None) {
                    Ok(WaitStatus::Exited(_, c)) => break Some(ExitStatus::Exited(c)),
                    Ok(WaitStatus::Signaled(_, s, _)) => {
                        break Some(ExitStatus::Signaled(s as i32))
                    }
                    Ok(_) | Err(Errno::EINTR) => continue,
                    Err(_) => break None,
                }
            },
            None => None,
        };
        // The init died without reporting (killed): pid 1 normally follows it (parent-death
        // signal), but not after exec-ing a setuid binary. Kill it through the pidfd and wait:
        // once pid 1 is gone, so is the rest of its pid namespace and its mounts.
        if reported.is_none() {
            if let Some(fd) = &self.pidfd {
                let _ = sys::pidfd_send_signal(fd, libc::SIGKILL);
                sys::pidfd_wait_exit(fd);
            }
        }
        if failed_start {
            self.remove_everything();
        } else {
            self.cleanup();
        }
        reported
            .or(waited)
            .ok_or_else(|| Error::Protocol("lost track of the sandbox init".into()))
    }

    fn cleanup(&mut self) {
        if let Some(root) = &self.writable_root {
            remove_stubs(root, &self.stubs);
        }
        let _ = remove_tree(&self.scratch);
    }

    fn remove_everything(&mut self) {
        if let Some(upper) = &self.upperdir {
            let _ = remove_tree(upper);
        } else if let Some(root) = &self.writable_root {
            remove_stubs(root, &self.stubs);
        }
        let _ = remove_tree(&self.scratch);
    }
}

/// Signals a sandbox from any thread; see [`Sandbox::signaller`].
#[derive(Debug, Clone)]
pub struct Signaller {
    monitor: Option<Arc<OwnedFd>>,
    pid1: Option<Arc<OwnedFd>>,
}

impl Signaller {
    /// Sends `signal` (see [`Sandbox::signal`]); a sandbox already gone is not an error.
    pub fn signal(&self, signal: i32) -> Result<()> {
        Signal::try_from(signal).map_err(Error::sys(format!("signal {signal}")))?;
        // SIGKILL cannot be forwarded: it goes to pid 1 itself (or, lacking its pidfd, to the
        // init, whose death takes pid 1 down).
        let target = if signal == libc::SIGKILL {
            self.pid1.as_ref().or(self.monitor.as_ref())
        } else {
            self.monitor.as_ref()
        };
        match target {
            Some(fd) => match sys::pidfd_send_signal(fd, signal) {
                Ok(()) | Err(Errno::ESRCH) => Ok(()),
                Err(e) => Err(Error::sys(format!("send signal {signal} to the sandbox"))(
                    e,
                )),
            },
            None => Ok(()),
        }
    }
}

impl AsFd for Sandbox {
    /// Readable when the sandbox has exited (for async waiting: register it with the
    /// reactor, then call [`Sandbox::wait`]).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ch.as_fd()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.kill();
            let _ = self.finish(false);
        }
    }
}

/// Removes the mount points the init created (empty files and directories it reported), deepest
/// first, from the writable root. Resolution never follows a symlink (the sandbox may have
/// replaced a parent with one), and only empty stubs go.
pub(crate) fn remove_stubs(root: &Path, stubs: &[String]) {
    use nix::fcntl::ResolveFlag;
    let Ok(rootfd) = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) else {
        return;
    };
    let resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS;
    for stub in stubs.iter().rev() {
        let Some((parent, name)) = stub.rsplit_once('/') else {
            continue;
        };
        if name.is_empty() || name == "." || name == ".." {
            continue;
        }
        let Ok(dir) = sys::open_under(
            &rootfd,
            parent,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY,
            resolve,
        ) else {
            continue;
        };
        sys::remove_empty(&dir, name);
    }
}
