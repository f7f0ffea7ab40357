//! The sandbox init: the small entry point of the `lade` binary (`lade __lade-sandbox-init`)
//! that the caller re-executes for each sandbox, runc style.
//!
//! Process tree and why:
//!
//! ```text
//! lade (multi-threaded, tokio)            posix_spawn: no work of ours between fork and exec
//!  └─ lade __lade-sandbox-init  "monitor" fresh single-threaded process: unshare(user?) +
//!      │                                  unshare(mnt, pid, uts, ipc, net), fork
//!      └─ pid 1 of the sandbox            mounts, pivot_root, creds, exec the command
//!          └─ (with --init: the command; pid 1 stays ours, reaping and forwarding signals)
//! ```
//!
//! The monitor stays outside the new pid namespace, forwards signals to pid 1, turns its death
//! into an `Exited` message, and kills the sandbox when the caller's end of the socket closes
//! (the caller died). Every mount, the overlay included, is made inside the sandbox's own mount
//! namespace, so when pid 1 is gone (and with it, by the kernel's rule, every process of its
//! pid namespace) the monitor exits and the namespace and all its mounts vanish: nothing to
//! unmount, even after SIGKILL.
#![allow(unsafe_code)]

use std::convert::Infallible;
use std::ffi::{CString, OsStr};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::error::StartErrorKind;
use crate::plan::{self, HostFacts, Plan, UserNs};
use crate::proto::{Channel, FromInit, ToInit};
use crate::spec::{SandboxSpec, DEFAULT_PATH};
use crate::sys::{self, Linux, Source, Syscall};
use crate::user::ExecUser;
use crate::{setup, Error, ExitStatus, Result};

/// The hidden first argument that selects the init.
pub const INIT_ARG: &str = "__lade-sandbox-init";

/// The fd the socket arrives on.
pub(crate) const SOCK_FD: RawFd = 3;

/// Runs the sandbox init and exits when this process was started as one; returns at once
/// otherwise. Call it first thing in `main`, before clap and before any thread is started
/// (`unshare(CLONE_NEWUSER)` needs a single-threaded process).
pub fn maybe_run_init() {
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() != Some(OsStr::new(INIT_ARG)) {
        return;
    }
    let code = monitor_main();
    // SAFETY: _exit ends the process without running anything else; nothing needs flushing.
    unsafe { libc::_exit(code) }
}

fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "lade sandbox init: {msg}");
}

fn monitor_main() -> i32 {
    // Only fds 0-2 and the socket are ours; anything else inherited is closed.
    sys::close_from(SOCK_FD + 1);
    // Re-executed through /proc/self/exe the command name would be "exe".
    let _ = nix::sys::prctl::set_name(c"lade-sandbox");
    match nix::sys::stat::fstat(
        // SAFETY: borrowing fd 3 only for the fstat; ownership is taken below once checked.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(SOCK_FD) },
    ) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFSOCK => {}
        _ => {
            say("this entry point is internal to lade and cannot be run by hand");
            return 125;
        }
    }
    // SAFETY: fd 3 is an open socket handed to us by the caller and owned by nothing else.
    let mut ch = Channel::new(unsafe { OwnedFd::from_raw_fd(SOCK_FD) });
    let spec = match ch.recv::<ToInit>() {
        Ok(Some(ToInit::Spec(spec))) => *spec,
        Ok(_) => return 125,
        Err(e) => {
            say(&e.to_string());
            return 125;
        }
    };
    match run(&mut ch, &spec) {
        Ok(code) => code,
        Err(e) => {
            let _ = ch.send(
                &FromInit::Failed {
                    kind: StartErrorKind::Setup,
                    message: e.to_string(),
                },
                None,
            );
            125
        }
    }
}

fn run(ch: &mut Channel, spec: &SandboxSpec) -> Result<i32> {
    let host = HostFacts {
        euid: nix::unistd::geteuid().as_raw(),
        egid: nix::unistd::getegid().as_raw(),
    };
    let plan = plan::plan(spec, host)?;
    if let Some(userns) = &plan.userns {
        enter_userns(userns)?;
    }
    unshare(plan.namespaces).map_err(Error::sys(format!(
        "unshare namespaces {:?}",
        plan.namespaces
    )))?;
    // Block every signal before forking: the monitor takes them from a signalfd, and none can
    // arrive between the fork and the loop. The sandbox process restores defaults before exec.
    SigSet::all()
        .thread_block()
        .map_err(Error::sys("block signals"))?;
    let (exec_r, exec_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("create the exec pipe"))?;
    // SAFETY: this process is single-threaded (a fresh exec of the lade binary that started no
    // thread), so the child may run any code.
    match unsafe { fork() }.map_err(Error::sys("fork the sandbox's pid 1"))? {
        ForkResult::Child => {
            drop(exec_r);
            let code = sandbox_main(ch, spec, &plan, exec_w);
            // SAFETY: leave without running atexit handlers or destructors of the monitor's
            // state.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(exec_w);
            monitor(ch, child, exec_r)
        }
    }
}

/// Creates a user namespace mapping the caller's uid and gid to root.
fn enter_userns(u: &UserNs) -> Result<()> {
    unshare(CloneFlags::CLONE_NEWUSER).map_err(Error::sys("unshare the user namespace"))?;
    let write = |file: &str, text: String| -> Result<()> {
        std::fs::write(file, text).map_err(Error::io(format!("write {file}")))
    };
    let lines = |maps: &[crate::spec::IdMap]| {
        maps.iter()
            .map(|m| format!("{} {} {}\n", m.inside, m.outside, m.count))
            .collect::<String>()
    };
    if u.deny_setgroups {
        write("/proc/self/setgroups", "deny".into())?;
    }
    write("/proc/self/uid_map", lines(&u.uid_map))?;
    write("/proc/self/gid_map", lines(&u.gid_map))?;
    Ok(())
}

/// The monitor: waits for the exec, reports, forwards signals, reports the exit.
fn monitor(ch: &mut Channel, child: Pid, exec_r: OwnedFd) -> Result<i32> {
    // A pidfd on pid 1 for the caller, taken while pid 1 is our unreaped child: whatever
    // happens to this monitor, the caller can still make sure pid 1 is gone.
    let pidfd = sys::pidfd_open(child.as_raw()).map_err(Error::sys("pidfd_open pid 1"))?;
    let mut byte = [0u8; 1];
    let started = loop {
        match nix::unistd::read(&exec_r, &mut byte) {
            Ok(0) => break true,
            Ok(_) => break false,
            Err(Errno::EINTR) => continue,
            Err(_) => break false,
        }
    };
    drop(exec_r);
    if started {
        let _ = ch.send(
            &FromInit::Started {
                pid: child.as_raw(),
            },
            Some(pidfd.as_raw_fd()),
        );
    }
    drop(pidfd);
    let sfd = SignalFd::with_flags(
        &SigSet::all(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )
    .map_err(Error::sys("create a signalfd"))?;
    let mut caller_alive = true;
    loop {
        // The child may be gone already (SIGCHLD then sits in the signalfd too).
        if let Some(status) = reap(child)? {
            let _ = ch.send(&FromInit::Exited(status), None);
            return Ok(status.code());
        }
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if caller_alive {
            fds.push(PollFd::new(ch.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("poll")(e)),
        }
        let caller_ready = caller_alive && fds[1].revents().is_some_and(|r| !r.is_empty());
        drop(fds);
        while let Ok(Some(info)) = sfd.read_signal() {
            let sig = info.ssi_signo as i32;
            if sig == libc::SIGCHLD || sig == libc::SIGPIPE {
                continue;
            }
            if let Ok(sig) = Signal::try_from(sig) {
                let _ = kill(child, sig);
            }
        }
        if caller_ready {
            match ch.recv::<ToInit>() {
                Ok(Some(ToInit::Kill)) => {
                    let _ = kill(child, Signal::SIGKILL);
                }
                Ok(Some(ToInit::Spec(_))) => {}
                // The caller is gone: take the sandbox down with it.
                Ok(None) | Err(_) => {
                    caller_alive = false;
                    let _ = kill(child, Signal::SIGKILL);
                }
            }
        }
    }
}

fn reap(child: Pid) -> Result<Option<ExitStatus>> {
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some(ExitStatus::Exited(code))),
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return Ok(Some(ExitStatus::Signaled(sig as i32)))
            }
            Ok(_) => return Ok(None),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("wait for the sandbox's pid 1")(e)),
        }
    }
}

/// Pid 1 of the sandbox: everything up to exec. Returns an exit code only on failure, after
/// telling the caller why.
fn sandbox_main(ch: &Channel, spec: &SandboxSpec, plan: &Plan, exec_w: OwnedFd) -> i32 {
    let err = match sandbox_setup(ch, spec, plan, &exec_w) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    fail(ch, &exec_w, err)
}

fn fail(ch: &Channel, exec_w: &OwnedFd, err: Error) -> i32 {
    let kind = match &err {
        Error::Start { kind, .. } => *kind,
        _ => StartErrorKind::Setup,
    };
    let _ = ch.send(
        &FromInit::Failed {
            kind,
            message: err.to_string(),
        },
        None,
    );
    let _ = nix::unistd::write(exec_w, b"E");
    kind.exit_code()
}

fn sandbox_setup(
    ch: &Channel,
    spec: &SandboxSpec,
    plan: &Plan,
    exec_w: &OwnedFd,
) -> Result<Infallible> {
    // Die with the monitor.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(Error::sys("set pdeathsig"))?;
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let sys = Linux::new();
    let stubs = setup::prepare_root(&sys, plan)?;
    if !stubs.is_empty() {
        ch.send(&FromInit::Stubs(stubs), None)?;
    }
    nix::unistd::setsid().map_err(Error::sys("setsid"))?;
    if spec.process.tty {
        open_console(ch, &sys, spec)?;
    }
    let user = setup::resolve_user(&sys, &spec.process)?;
    // before the working directory is made, so that it gets its 0755 whatever lade's umask
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    setup::enter_cwd(
        &sys,
        &spec.process.cwd,
        spec.process.rules,
        (user.uid, user.gid),
    )?;
    let env = process_env(&spec.process.env, &user);
    let can_setgroups = plan.userns.as_ref().is_none_or(|u| !u.deny_setgroups);
    setup::apply_credentials(&sys, &spec.process, &user, can_setgroups)?;
    // A credential change clears the parent-death signal.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(Error::sys("set pdeathsig"))?;

    let argv: Vec<CString> = spec
        .process
        .args
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::InvalidSpec("argument with a NUL byte".into()))?;
    let envp: Vec<CString> = env
        .iter()
        .map(|e| CString::new(e.as_bytes()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::InvalidSpec("environment entry with a NUL byte".into()))?;
    let path = find_executable(&spec.process.args[0], &env)?;

    if spec.process.init {
        // The init stays alive next to the image's code: it must hold nothing of the host
        // (the overlay dirs' fds, the root fd) and be non-dumpable, so no process of the
        // sandbox can reach its fds through /proc/1/fd.
        drop(sys);
        nix::sys::prctl::set_dumpable(false).map_err(Error::sys("make the init non-dumpable"))?;
        return mini_init(ch, exec_w, &path, &argv, &envp, spec.process.tty);
    }
    exec(&path, &argv, &envp)
}

fn process_env(env: &[String], user: &ExecUser) -> Vec<String> {
    let mut env = env.to_vec();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    env
}

/// Opens a pty in the sandbox's own devpts, sends the master to the caller, makes the slave
/// the controlling terminal and stdio, and binds it on `/dev/console`.
fn open_console(ch: &Channel, sys: &Linux, spec: &SandboxSpec) -> Result<()> {
    let master = nix::fcntl::open(
        "/dev/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(Error::sys("open /dev/ptmx"))?;
    let mut n: libc::c_int = 0;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int, TIOCGPTN writes one, TIOCGPTPEER returns a new fd.
    let slave = unsafe {
        Errno::result(libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock))
            .map_err(Error::sys("unlock the pty"))?;
        Errno::result(libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n))
            .map_err(Error::sys("get the pty number"))?;
        let fd = Errno::result(libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        ))
        .map_err(Error::sys("open the pty slave"))?;
        OwnedFd::from_raw_fd(fd)
    };
    if let Some(size) = spec.process.console_size {
        crate::pty::set_size(&slave, size).map_err(Error::sys("set the terminal size"))?;
    }
    ch.send(&FromInit::Pty, Some(master.as_raw_fd()))?;
    drop(master);
    // /dev/console is the terminal, as with runc.
    let console = "/dev/console";
    if sys.lookup(console).ok().flatten().is_none() {
        sys.create_file(console, 0o666)
            .map_err(Error::sys("create /dev/console"))?;
    }
    let pts = format!("/dev/pts/{n}");
    sys.mount_in_root(Source::InRoot(&pts), console, None, MsFlags::MS_BIND, None)
        .map_err(Error::sys("bind the pty on /dev/console"))?;
    // SAFETY: TIOCSCTTY takes an int argument; dup2 onto 0-2 replaces our stdio.
    unsafe {
        Errno::result(libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0))
            .map_err(Error::sys("make the pty the controlling terminal"))?;
        for fd in 0..3 {
            Errno::result(libc::dup2(slave.as_raw_fd(), fd))
                .map_err(Error::sys("make the pty stdio"))?;
        }
    }
    Ok(())
}

/// Looks `arg0` up in the process's `PATH` (inside the sandbox, as the final user).
fn find_executable(arg0: &str, env: &[String]) -> Result<CString> {
    let not_found = || Error::Start {
        kind: StartErrorKind::NotFound,
        message: format!("exec: \"{arg0}\": executable file not found in $PATH"),
    };
    if arg0.contains('/') {
        return CString::new(arg0).map_err(|_| not_found());
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = format!("{dir}/{arg0}");
        let Ok(c) = CString::new(cand) else { continue };
        if let Ok(st) = nix::sys::stat::stat(c.as_c_str()) {
            if st.st_mode & libc::S_IFMT == libc::S_IFREG
                && nix::unistd::access(c.as_c_str(), nix::unistd::AccessFlags::X_OK).is_ok()
            {
                return Ok(c);
            }
        }
    }
    Err(not_found())
}

/// Restores default signal dispositions and an empty mask (the Rust runtime ignores SIGPIPE,
/// glibc's posix_spawn leaves its internal signals 32 and 33 ignored, the monitor blocked
/// everything). Raw `rt_sigaction`: glibc's wrappers refuse 32 and 33.
fn reset_signals() {
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: 0, // SIG_DFL
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads a kernel sigaction of the size we pass; SIG_DFL needs no
        // restorer.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

fn exec(path: &CString, argv: &[CString], envp: &[CString]) -> Result<Infallible> {
    // Nothing of lade's survives the exec: every fd above stdio is close-on-exec (our socket
    // and exec pipe included; their closing tells the monitor the exec happened).
    sys::cloexec_from(3).map_err(Error::sys("mark fds close-on-exec"))?;
    reset_signals();
    let e = nix::unistd::execve(path, argv, envp)
        .err()
        .unwrap_or(Errno::UnknownErrno);
    // Keep signals blocked again while reporting.
    let _ = SigSet::all().thread_block();
    let shown = path.to_string_lossy();
    Err(match e {
        Errno::ENOENT => Error::Start {
            kind: StartErrorKind::NotFound,
            message: format!("exec: \"{shown}\": no such file or directory"),
        },
        Errno::EACCES | Errno::ENOEXEC | Errno::EPERM => Error::Start {
            kind: StartErrorKind::PermissionDenied,
            message: format!("exec: \"{shown}\": {}", e.desc().to_lowercase()),
        },
        e => Error::Start {
            kind: StartErrorKind::Setup,
            message: format!("exec: \"{shown}\": {}", e.desc().to_lowercase()),
        },
    })
}

/// `--init`: pid 1 stays ours (already jailed and without privileges), forks the command,
/// reaps every zombie and forwards signals to it; exits like the command (128+signal when it
/// was killed), as tini does.
fn mini_init(
    ch: &Channel,
    exec_w: &OwnedFd,
    path: &CString,
    argv: &[CString],
    envp: &[CString],
    tty: bool,
) -> Result<Infallible> {
    // The command must not start before this process has dropped every fd above stdio (it
    // would find them in /proc/1/fd): the child waits for the end of this pipe, which comes
    // when the parent's `close_from(3)` closes the write end.
    let (gate_r, gate_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("create the init's gate pipe"))?;
    let _ = nix::sys::prctl::set_name(c"lade-init");
    // SAFETY: still single-threaded.
    match unsafe { fork() }.map_err(Error::sys("fork the command under --init"))? {
        ForkResult::Child => {
            drop(gate_w);
            let mut b = [0u8; 1];
            while let Err(Errno::EINTR) = nix::unistd::read(&gate_r, &mut b) {}
            drop(gate_r);
            let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
            if tty {
                // Become the terminal's foreground group (SIGTTOU is blocked here).
                let _ = nix::unistd::tcsetpgrp(std::io::stdin(), nix::unistd::getpid());
            }
            let err = match exec(path, argv, envp) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            let code = fail(ch, exec_w, err);
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            // Our copies of the socket and exec pipe would hide the command's exec from the
            // monitor; drop everything above stdio (the gate pipe too, which lets the command
            // start).
            std::mem::forget((gate_r, gate_w));
            sys::close_from(3);
            let code = reap_loop(child);
            // SAFETY: plain process exit.
            unsafe { libc::_exit(code) }
        }
    }
}

fn reap_loop(child: Pid) -> i32 {
    let all = SigSet::all();
    loop {
        let sig = match all.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig == Signal::SIGCHLD {
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) if pid == child => return code,
                    Ok(WaitStatus::Signaled(pid, s, _)) if pid == child => return 128 + s as i32,
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        } else if sig != Signal::SIGPIPE {
            let _ = kill(child, sig);
        }
    }
}
