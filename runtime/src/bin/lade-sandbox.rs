//! `lade-sandbox`: a small front end to the runtime crate, for its integration tests (it is their
//! init binary) and for debugging and benchmarking the sandbox without the rest of lade.
//!
//! ```text
//! lade-sandbox run [--rootfs DIR | --lower DIR...] [--upper DIR] [--state DIR] [--keep]
//!                  [-e K=V] [-w DIR] [-u USER[:GROUP]] [--group-add G] [-v SRC:DST[:ro]]
//!                  [--hostname H] [--network none|host] [-t] [--init] [--userns]
//!                  [--ulimit NAME=SOFT[:HARD]] [--no-new-privs] [--] CMD [ARG...]
//! ```
//!
//! The changes stay in `--upper DIR` (which must not exist yet) when it is given; otherwise they
//! go to a fresh upperdir in the state dir, removed at the end unless `--keep`.
//!
//! Exits with the command's code (128+signal when killed; 125/126/127 when it could not start).
// A command-line tool: it reports on stderr.
#![allow(clippy::print_stderr)]

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use lade_runtime::{
    docker_env, BindMount, EtcFiles, NetworkMode, Rlimit, Rootfs, Runtime, SandboxSpec, StdioSet,
    UserNamespace,
};

fn usage() -> ! {
    eprintln!(
        "usage: lade-sandbox run [--rootfs DIR | --lower DIR...] [--upper DIR] [--state DIR] \
         [--keep] [-e K=V] [-w DIR] [-u USER] [--group-add G] [-v SRC:DST[:ro]] [--hostname H] \
         [--network none|host] [-t] [--init] [--userns] [--ulimit NAME=SOFT[:HARD]] \
         [--no-new-privs] [--] CMD [ARG...]"
    );
    std::process::exit(2)
}

fn main() -> ExitCode {
    lade_runtime::maybe_run_init();
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("run") {
        usage();
    }
    let mut rootfs: Option<(PathBuf, bool)> = None;
    let mut lowers = Vec::new();
    let mut upper: Option<PathBuf> = None;
    let mut state = PathBuf::from("/tmp/lade-sandbox");
    let mut keep = false;
    let mut env = Vec::new();
    let mut cwd = "/".to_string();
    let mut user = String::new();
    let mut groups = Vec::new();
    let mut mounts = Vec::new();
    let mut hostname = "lade".to_string();
    let mut network = NetworkMode::None;
    let mut tty = false;
    let mut init = false;
    let mut userns = UserNamespace::Auto;
    let mut rlimits = Vec::new();
    let mut nnp = false;
    let mut cmd = Vec::new();
    let next = |args: &mut std::iter::Skip<std::env::Args>| args.next().unwrap_or_else(|| usage());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rootfs" => rootfs = Some((next(&mut args).into(), false)),
            "--rootfs-ro" => rootfs = Some((next(&mut args).into(), true)),
            "--lower" => lowers.push(PathBuf::from(next(&mut args))),
            "--upper" => upper = Some(next(&mut args).into()),
            "--state" => state = next(&mut args).into(),
            "--keep" => keep = true,
            "-e" => env.push(next(&mut args)),
            "-w" => cwd = next(&mut args),
            "-u" => user = next(&mut args),
            "--group-add" => groups.push(next(&mut args)),
            "-v" => match BindMount::parse(&next(&mut args)) {
                Ok(m) => mounts.push(m),
                Err(e) => {
                    eprintln!("lade-sandbox: {e}");
                    return ExitCode::from(125);
                }
            },
            "--hostname" => hostname = next(&mut args),
            "--network" => {
                network = match next(&mut args).as_str() {
                    "none" => NetworkMode::None,
                    "host" => NetworkMode::Host,
                    _ => usage(),
                }
            }
            "-t" => tty = true,
            "--init" => init = true,
            "--userns" => userns = UserNamespace::MapCaller,
            "--no-new-privs" => nnp = true,
            "--ulimit" => {
                let v = next(&mut args);
                let (name, lim) = v.split_once('=').unwrap_or_else(|| usage());
                let (soft, hard) = lim.split_once(':').unwrap_or((lim, lim));
                let (Ok(soft), Ok(hard)) = (soft.parse(), hard.parse()) else {
                    usage()
                };
                rlimits.push(Rlimit {
                    name: name.into(),
                    soft,
                    hard,
                });
            }
            "--" => {
                cmd.extend(args.by_ref());
                break;
            }
            s if s.starts_with('-') => usage(),
            _ => {
                cmd.push(a);
                cmd.extend(args.by_ref());
                break;
            }
        }
    }
    if cmd.is_empty() {
        usage();
    }
    if let Err(e) = std::fs::create_dir_all(&state) {
        eprintln!("lade-sandbox: create {}: {e}", state.display());
        return ExitCode::from(125);
    }
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let scratch = state.join(format!("scratch-{unique}"));
    // `--upper DIR` names where the caller wants the changes: they are the result and stay.
    // Only an upperdir this tool picked itself (in the state dir) is removed without `--keep`.
    let own_upper = upper.is_none();
    let root = match (rootfs, lowers.is_empty()) {
        (Some((path, readonly)), true) => Rootfs::Dir { path, readonly },
        (None, false) => Rootfs::Overlay {
            lowerdirs: lowers,
            upperdir: upper.unwrap_or_else(|| state.join(format!("upper-{unique}"))),
        },
        _ => usage(),
    };
    let mut spec = SandboxSpec::new(root, scratch, cmd);
    spec.process.env = docker_env(&env, &hostname, tty);
    spec.etc = EtcFiles::docker_defaults(network);
    spec.hostname = hostname;
    spec.network = network;
    spec.mounts = mounts;
    spec.user_namespace = userns;
    spec.process.cwd = cwd;
    spec.process.user = user;
    spec.process.additional_groups = groups;
    spec.process.rlimits = rlimits;
    spec.process.no_new_privs = nnp;
    spec.process.tty = tty;
    spec.process.init = init;
    if tty {
        spec.process.console_size = lade_runtime::pty::get_size(&std::io::stdout());
    }

    let mut sandbox = match Runtime::new().spawn(&spec, StdioSet::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lade-sandbox: {e}");
            let code = match &e {
                lade_runtime::Error::Start { kind, .. } => kind.exit_code(),
                _ => 125,
            };
            return ExitCode::from(code as u8);
        }
    };
    if let Some(master) = sandbox.take_pty() {
        lade_runtime::pty::relay(
            master.as_fd(),
            std::io::stdin().as_fd(),
            std::io::stdout().as_fd(),
        );
    }
    match sandbox.wait() {
        Ok(done) => {
            if let Some(upper) = &done.upperdir {
                if keep || !own_upper {
                    eprintln!("lade-sandbox: upperdir {}", upper.display());
                } else if let Err(e) = lade_runtime::remove_tree(upper) {
                    eprintln!("lade-sandbox: remove {}: {e}", upper.display());
                }
            }
            ExitCode::from(done.status.code() as u8)
        }
        Err(e) => {
            eprintln!("lade-sandbox: {e}");
            ExitCode::from(125)
        }
    }
}
