//! Applies a [`Plan`] through the [`Syscall`] seam: the root mount, the in-root mounts with
//! their safety checks, `pivot_root`, then the process's working directory and credentials.
//! Runs in the sandbox's pid 1 before it execs; unit-tested with the recording double.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::MsFlags;

use crate::plan::{Kind, Plan, RootMount, Step};
use crate::spec::{ProcessRules, ProcessSpec};
use crate::sys::{FileType, Source, Syscall};
use crate::user::{self, ExecUser};
use crate::{caps, plan, Error, Result};

/// Largest mount data the kernel takes (one page, with the NUL).
const MOUNT_DATA_MAX: usize = 4095;

/// Largest `/etc/passwd` or `/etc/group` read from an image.
const ID_FILE_LIMIT: usize = 4 << 20;

/// Mounts the root and everything in it, sets hostname and `lo`, and pivots into it. Returns
/// the mount-point stubs it had to create in the rootfs (absolute in-root paths, parents first)
/// so they can be removed from the upperdir afterwards.
pub fn prepare_root<S: Syscall>(sys: &S, plan: &Plan) -> Result<Vec<String>> {
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .map_err(Error::sys("make the sandbox's mounts private"))?;
    // Name the overlay's directories by fd first: the tmpfs is about to cover the scratch dir
    // (the overlay work dir).
    let held = match &plan.root {
        RootMount::Overlay {
            lowerdirs,
            upperdir,
            workdir,
            ..
        } => {
            let mut all = lowerdirs.clone();
            all.push(upperdir.clone());
            all.push(workdir.clone());
            sys.hold_dirs(&all).map_err(|e| Error::Sys {
                what: "open the overlay directories (lowerdirs, upperdir, scratch)".into(),
                errno: e,
            })?
        }
        RootMount::Bind { .. } => Vec::new(),
    };
    sys.mount(
        Some(Path::new("tmpfs")),
        &plan.scratch,
        Some("tmpfs"),
        // No flags: the generated /etc files are bind-mounted from here and docker's carry
        // none either.
        MsFlags::empty(),
        Some("mode=755,size=1m"),
    )
    .map_err(Error::sys(format!(
        "mount the scratch tmpfs on {}",
        plan.scratch.display()
    )))?;
    for (name, text) in &plan.scratch_files {
        let p = plan.scratch.join(name);
        sys.write_host_file(&p, text.as_bytes())
            .map_err(Error::sys(format!("write {}", p.display())))?;
    }
    let mountpoint = plan.root_mountpoint();
    sys.mkdir_host(&mountpoint, 0o755)
        .map_err(Error::sys(format!("create {}", mountpoint.display())))?;
    match &plan.root {
        RootMount::Overlay { extra, .. } => {
            let n = held.len();
            let options = format!(
                "lowerdir={},upperdir={},workdir={}{extra}",
                held[..n - 2].join(":"),
                held[n - 2],
                held[n - 1]
            );
            if options.len() > MOUNT_DATA_MAX {
                return Err(Error::InvalidSpec(format!(
                    "{} lowerdirs do not fit in one overlay mount; squash some layers",
                    n - 2
                )));
            }
            sys.mount(
                Some(Path::new("overlay")),
                &mountpoint,
                Some("overlay"),
                MsFlags::empty(),
                Some(&options),
            )
            .map_err(|e| Error::Sys {
                what: match &plan.root {
                    RootMount::Overlay {
                        lowerdirs,
                        upperdir,
                        ..
                    } => format!(
                        "mount the overlay rootfs (lowerdirs {lowerdirs:?}, upperdir {}, work dir \
                         {}){}",
                        upperdir.display(),
                        plan.scratch.display(),
                        if matches!(e, Errno::EINVAL | Errno::EXDEV) {
                            "; the scratch dir must be on the upperdir's filesystem, one that \
                             overlayfs takes as an upper layer"
                        } else {
                            ""
                        }
                    ),
                    RootMount::Bind { .. } => String::new(),
                },
                errno: e,
            })?;
        }
        RootMount::Bind { path, .. } => {
            sys.mount(
                Some(path),
                &mountpoint,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
            .map_err(Error::sys(format!("bind the rootfs {}", path.display())))?;
        }
    }
    sys.set_root(&mountpoint).map_err(Error::sys(format!(
        "open the rootfs {}",
        mountpoint.display()
    )))?;

    let mut stubs = Vec::new();
    for step in &plan.steps {
        apply_step(sys, step, &mut stubs)?;
    }
    if let RootMount::Bind { readonly: true, .. } = &plan.root {
        sys.mount(
            None,
            &mountpoint,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )
        .map_err(Error::sys("make the rootfs read-only"))?;
    }
    sys.sethostname(&plan.hostname)
        .map_err(Error::sys(format!("set hostname {}", plan.hostname)))?;
    if plan.loopback_up {
        sys.loopback_up().map_err(Error::sys("bring up lo"))?;
    }
    sys.pivot_root()
        .map_err(Error::sys("pivot_root into the rootfs"))?;
    Ok(stubs)
}

fn refused_symlink(target: &str) -> Error {
    Error::Refused(format!(
        "mount target {target} is a symlink in the rootfs; mount targets must be real files or \
         directories"
    ))
}

/// Makes sure `target` exists as `kind`, creating missing components (recorded in `stubs`).
/// Intermediate symlinks are followed (inside the root); a symlink as the last component is
/// refused.
fn ensure_target<S: Syscall>(
    sys: &S,
    target: &str,
    kind: Kind,
    stubs: &mut Vec<String>,
) -> Result<()> {
    let comps: Vec<&str> = target.split('/').filter(|c| !c.is_empty()).collect();
    let mut cur = String::with_capacity(target.len());
    let mut through_symlink = false;
    for (i, c) in comps.iter().enumerate() {
        cur.push('/');
        cur.push_str(c);
        let last = i + 1 == comps.len();
        let found = sys
            .lookup(&cur)
            .map_err(Error::sys(format!("look up {cur} in the rootfs")))?;
        match found {
            None => {
                let r = if last && kind == Kind::File {
                    sys.create_file(&cur, 0o644)
                } else {
                    sys.mkdir(&cur, 0o755)
                };
                r.map_err(Error::sys(format!(
                    "create mount point {cur} in the rootfs"
                )))?;
                // Under /dev it is our own fresh tmpfs, not the rootfs.
                if !through_symlink && !cur.starts_with("/dev/") {
                    stubs.push(cur.clone());
                }
            }
            Some(FileType::Symlink) if last => return Err(refused_symlink(target)),
            Some(FileType::Symlink) => through_symlink = true,
            Some(FileType::Dir) if last && kind == Kind::File => {
                return Err(Error::InvalidSpec(format!(
                    "mount target {target} is a directory in the rootfs but the source is a file"
                )))
            }
            Some(FileType::Dir) => {}
            Some(_) if !last => {
                return Err(Error::InvalidSpec(format!(
                    "mount target {target}: {cur} is not a directory in the rootfs"
                )))
            }
            Some(_) if kind == Kind::Dir => {
                return Err(Error::InvalidSpec(format!(
                    "mount target {target} is a file in the rootfs but the source is a directory"
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn mount_err(target: &str, what: String) -> impl FnOnce(Errno) -> Error + '_ {
    move |e| match e {
        Errno::ELOOP => refused_symlink(target),
        e => Error::Sys { what, errno: e },
    }
}

fn apply_step<S: Syscall>(sys: &S, step: &Step, stubs: &mut Vec<String>) -> Result<()> {
    match step {
        Step::Mount {
            fstype,
            source,
            target,
            flags,
            data,
        } => {
            ensure_target(sys, target, Kind::Dir, stubs)?;
            sys.mount_in_root(
                Source::Fs(source),
                target,
                Some(fstype),
                *flags,
                (!data.is_empty()).then_some(data.as_str()),
            )
            .map_err(mount_err(target, format!("mount {fstype} on {target}")))?;
        }
        Step::Bind {
            source,
            target,
            recursive,
            readonly,
            keep,
        } => {
            let kind = match sys.host_type(source) {
                Ok(FileType::Dir) => Kind::Dir,
                Ok(_) => Kind::File,
                Err(e) => {
                    return Err(Error::Sys {
                        what: format!("bind mount source {}", source.display()),
                        errno: e,
                    })
                }
            };
            ensure_target(sys, target, kind, stubs)?;
            let mut flags = MsFlags::MS_BIND;
            if *recursive {
                flags |= MsFlags::MS_REC;
            }
            sys.mount_in_root(Source::Host(source), target, None, flags, None)
                .map_err(mount_err(
                    target,
                    format!("bind {} on {target}", source.display()),
                ))?;
            if *readonly {
                remount_ro(sys, target, *keep)?;
            }
        }
        Step::Device {
            target,
            major,
            minor,
            bind_from_host,
        } => {
            if *bind_from_host {
                sys.create_file(target, 0o666)
                    .map_err(Error::sys(format!("create {target}")))?;
                let host = Path::new(target.as_str());
                sys.mount_in_root(Source::Host(host), target, None, MsFlags::MS_BIND, None)
                    .map_err(mount_err(target, format!("bind the host's {target}")))?;
            } else {
                sys.mknod_char(target, 0o666, *major, *minor)
                    .map_err(Error::sys(format!("mknod {target}")))?;
            }
        }
        Step::Symlink { target, link } => {
            sys.symlink(target, link)
                .map_err(Error::sys(format!("symlink {link} -> {target}")))?;
        }
        Step::Mask { target } => {
            match sys
                .lookup(target)
                .map_err(Error::sys(format!("look up {target}")))?
            {
                None | Some(FileType::Symlink) => {}
                Some(FileType::Dir) => sys
                    .mount_in_root(
                        Source::Fs("tmpfs"),
                        target,
                        Some("tmpfs"),
                        MsFlags::MS_RDONLY,
                        None,
                    )
                    .map_err(mount_err(target, format!("mask {target}")))?,
                // The sandbox's own /dev/null, as docker does.
                Some(_) => sys
                    .mount_in_root(
                        Source::InRoot("/dev/null"),
                        target,
                        None,
                        MsFlags::MS_BIND,
                        None,
                    )
                    .map_err(mount_err(target, format!("mask {target}")))?,
            }
        }
        Step::ReadOnly { target } => {
            match sys
                .lookup(target)
                .map_err(Error::sys(format!("look up {target}")))?
            {
                None | Some(FileType::Symlink) => {}
                Some(_) => {
                    sys.mount_in_root(
                        Source::InRoot(target),
                        target,
                        None,
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        None,
                    )
                    .map_err(mount_err(target, format!("bind {target} on itself")))?;
                    remount_ro(
                        sys,
                        target,
                        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    )?;
                }
            }
        }
    }
    Ok(())
}

fn remount_ro<S: Syscall>(sys: &S, target: &str, keep: MsFlags) -> Result<()> {
    sys.mount_in_root(
        Source::Fs("none"),
        target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep,
        None,
    )
    .map_err(mount_err(target, format!("make {target} read-only")))
}

/// Resolves the process's user from the (pivoted) root's `/etc/passwd` and `/etc/group`.
pub fn resolve_user<S: Syscall>(sys: &S, process: &ProcessSpec) -> Result<ExecUser> {
    let read = |path: &str| -> Result<Option<String>> {
        match sys.read_file(path, ID_FILE_LIMIT) {
            Ok(Some(bytes)) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            Ok(None) => Ok(None),
            Err(Errno::ELOOP | Errno::EXDEV | Errno::EINVAL) => Err(Error::Refused(format!(
                "{path} in the image is not a regular file inside the rootfs"
            ))),
            Err(e) => Err(Error::Sys {
                what: format!("read {path} from the image"),
                errno: e,
            }),
        }
    };
    let passwd = read("/etc/passwd")?;
    // An empty user is root, with root's /etc/group memberships in docker run (not in
    // BuildKit's RUN, which does not read the file then).
    let group = if process.user.is_empty()
        && process.additional_groups.is_empty()
        && process.rules == ProcessRules::BuildKitRun
    {
        None
    } else {
        read("/etc/group")?
    };
    user::resolve(
        process.rules,
        &process.user,
        &process.additional_groups,
        passwd.as_deref(),
        group.as_deref(),
    )
}

/// Creates the working directory when missing (0755) and enters it. Resolution stays inside
/// the root and refuses magic links, so `/proc/self/fd/N` cannot lead to anything of the host.
///
/// `DockerRun`: the path is cleaned first (docker's `filepath.Clean`), missing directories are
/// made by root. `BuildKitRun`: the path with its `..` resolved is created first, each new
/// directory owned by `user` (`uid`, `gid`; BuildKit's `MkdirAllAndChown`); then, as runc does
/// with the path as written, whatever is still missing (a directory a `..` stepped out of) is
/// made by root, and the process starts in the path as written.
pub fn enter_cwd<S: Syscall>(
    sys: &S,
    cwd: &str,
    rules: ProcessRules,
    user: (u32, u32),
) -> Result<()> {
    let clean = crate::spec::clean_path(cwd);
    let cwd = match rules {
        ProcessRules::DockerRun => clean.as_str(),
        ProcessRules::BuildKitRun => {
            make_cwd(sys, cwd, &clean, Some(user))?;
            cwd
        }
    };
    make_cwd(sys, cwd, cwd, None)?;
    sys.chdir_in_root(if cwd.is_empty() { "/" } else { cwd })
        .map_err(|e| match e {
            Errno::ELOOP | Errno::EXDEV => refused_cwd(cwd),
            e => Error::Sys {
                what: format!("enter working directory {cwd}"),
                errno: e,
            },
        })
}

/// Creates the missing directories of `path` (part of the working directory `cwd`) one
/// component at a time, chowning them to `owner` when given.
fn make_cwd<S: Syscall>(sys: &S, cwd: &str, path: &str, owner: Option<(u32, u32)>) -> Result<()> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut cur = String::new();
    for c in comps {
        cur.push('/');
        cur.push_str(c);
        match sys.lookup(&cur) {
            Ok(None) => {
                sys.mkdir(&cur, 0o755)
                    .map_err(Error::sys(format!("create working directory {cur}")))?;
                if let Some((uid, gid)) = owner {
                    sys.chown(&cur, uid, gid).map_err(Error::sys(format!(
                        "chown working directory {cur} to {uid}:{gid}"
                    )))?;
                }
            }
            Ok(Some(FileType::Dir | FileType::Symlink)) => {}
            Ok(Some(_)) => {
                return Err(Error::InvalidSpec(format!(
                    "working directory {cwd}: {cur} is not a directory"
                )))
            }
            Err(Errno::ELOOP | Errno::EXDEV) => return Err(refused_cwd(cwd)),
            Err(e) => {
                return Err(Error::Sys {
                    what: format!("look up working directory {cur}"),
                    errno: e,
                })
            }
        }
    }
    Ok(())
}

fn refused_cwd(cwd: &str) -> Error {
    Error::Refused(format!(
        "working directory {cwd} goes through a magic link (like /proc/self/fd/N); use a plain \
         path inside the rootfs"
    ))
}

/// Sets rlimits, groups, ids, capabilities and `no_new_privs`, in the order that keeps the
/// capabilities needed for each step (runc's order).
///
/// `can_setgroups` is false in an unprivileged user namespace (it maps only the caller, as
/// root, and the kernel denies `setgroups` there). Then, as runc does for rootless containers,
/// explicitly added groups (`--group-add`) are an error, while memberships read from the
/// image's `/etc/group` are left out: they could only name gids that are not mapped, and every
/// file of such a sandbox belongs to uid and gid 0 anyway.
pub fn apply_credentials<S: Syscall>(
    sys: &S,
    process: &ProcessSpec,
    user: &ExecUser,
    can_setgroups: bool,
) -> Result<()> {
    for r in &process.rlimits {
        let res = plan::rlimit_resource(&r.name)?;
        sys.set_rlimit(res, r.soft, r.hard)
            .map_err(Error::sys(format!(
                "set rlimit {} {}:{}",
                r.name, r.soft, r.hard
            )))?;
    }
    let caps = caps::mask(process.capabilities.as_deref())?;
    sys.set_keepcaps(true)
        .map_err(Error::sys("keep capabilities"))?;
    sys.drop_bounding(caps)
        .map_err(Error::sys("drop capabilities from the bounding set"))?;
    let rootless_hint = if can_setgroups {
        ""
    } else {
        ": lade runs without root, and its sandbox's user namespace maps only uid and gid 0 \
         (the caller); run as root in the container, or run lade as root"
    };
    if can_setgroups {
        sys.setgroups(&user.groups).map_err(|e| match e {
            Errno::EINVAL => Error::User(format!(
                "supplementary groups {:?}: a gid is not mapped in the sandbox's user namespace",
                user.groups
            )),
            e => Error::sys(format!("set supplementary groups {:?}", user.groups))(e),
        })?;
    } else if !process.additional_groups.is_empty() {
        return Err(Error::User(format!(
            "cannot add groups {} in a rootless sandbox{rootless_hint}",
            process.additional_groups.join(", ")
        )));
    }
    sys.set_ids(user.uid, user.gid).map_err(|e| match e {
        Errno::EINVAL => Error::User(format!(
            "uid {} / gid {} is not mapped in the sandbox's user namespace{rootless_hint}",
            user.uid, user.gid
        )),
        e => Error::Sys {
            what: format!("switch to uid {} gid {}", user.uid, user.gid),
            errno: e,
        },
    })?;
    // Docker: the full set for root, nothing effective or permitted for other users (their
    // bounding set still limits what a setuid/file-capability binary can gain); inheritable
    // empty (CVE-2022-24769).
    let (effective, permitted) = if user.uid == 0 { (caps, caps) } else { (0, 0) };
    sys.capset(effective, permitted, 0)
        .map_err(Error::sys("set capabilities"))?;
    sys.clear_ambient()
        .map_err(Error::sys("clear ambient capabilities"))?;
    sys.set_keepcaps(false)
        .map_err(Error::sys("reset keep-capabilities"))?;
    if process.no_new_privs {
        sys.set_no_new_privs()
            .map_err(Error::sys("set no_new_privs"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::plan::{plan, HostFacts};
    use crate::spec::{BindMount, Rootfs, SandboxSpec};
    use crate::sys::recording::Recording;

    fn spec() -> SandboxSpec {
        SandboxSpec::new(
            Rootfs::Overlay {
                lowerdirs: vec!["/store/snap/1".into()],
                upperdir: "/store/c/upper".into(),
            },
            "/store/c/scratch",
            vec!["true".into()],
        )
    }
    const ROOT: HostFacts = HostFacts { euid: 0, egid: 0 };

    fn image() -> Recording {
        Recording::with_dirs(&["/proc", "/dev", "/sys", "/etc", "/tmp"])
    }

    #[test]
    fn mounts_private_then_root_then_pivot() {
        let sys = image();
        sys.set("/etc/hosts", FileType::File);
        sys.set("/etc/hostname", FileType::File);
        sys.set("/etc/resolv.conf", FileType::File);
        let stubs = prepare_root(&sys, &plan(&spec(), ROOT).unwrap()).unwrap();
        let calls = sys.calls();
        assert!(
            calls[0].starts_with("mount None / None MsFlags(MS_REC | MS_PRIVATE)"),
            "{calls:?}"
        );
        // The overlay's dirs are held by fd before the scratch tmpfs covers the scratch dir.
        assert_eq!(
            calls[1],
            "hold [\"/store/snap/1\", \"/store/c/upper\", \"/store/c/scratch\"]"
        );
        assert!(calls[2].starts_with("mount Some(\"tmpfs\") /store/c/scratch Some(\"tmpfs\")"));
        assert_eq!(calls[3], "write /store/c/scratch/hostname \"lade\\n\"");
        assert_eq!(calls[6], "mkdir_host /store/c/scratch/root 755");
        assert!(calls[7].starts_with(
            "mount Some(\"overlay\") /store/c/scratch/root Some(\"overlay\") MsFlags(0x0) \
             Some(\"lowerdir=fd:/store/snap/1,upperdir=fd:/store/c/upper,workdir=fd:/store/c/scratch,"
        ), "{}", calls[7]);
        assert_eq!(calls[8], "set_root /store/c/scratch/root");
        assert_eq!(calls.last().unwrap(), "pivot_root");
        assert!(calls.contains(&"sethostname lade".to_string()));
        assert!(calls.contains(&"lo up".to_string()));
        // /dev/pts, /dev/shm, /dev/mqueue are made in the fresh /dev tmpfs: not stubs.
        assert!(stubs.is_empty(), "{stubs:?}");
        assert!(calls.contains(&"mknod /dev/null 666 1:3".to_string()));
        // The pivot comes after every mount.
        let last_mount = calls.iter().rposition(|c| c.starts_with("mount")).unwrap();
        assert!(last_mount < calls.len() - 1);
    }

    #[test]
    fn missing_mount_points_are_created_and_reported_as_stubs() {
        let sys = image();
        let mut s = spec();
        s.mounts
            .push(BindMount::parse("/host/data:/srv/data:ro").unwrap());
        let stubs = prepare_root(&sys, &plan(&s, ROOT).unwrap()).unwrap();
        for stub in [
            "/etc/hostname",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/srv",
            "/srv/data",
        ] {
            assert!(stubs.contains(&stub.to_string()), "{stub} in {stubs:?}");
        }
        let calls = sys.calls();
        assert!(calls.contains(&"create /etc/hosts 644".to_string()));
        assert!(calls.contains(&"mkdir /srv/data 755".to_string()));
        let bind = calls
            .iter()
            .position(|c| c.starts_with("mount_in_root Host(\"/host/data\") /srv/data"))
            .unwrap();
        assert!(calls[bind + 1].contains("/srv/data") && calls[bind + 1].contains("MS_RDONLY"));
    }

    #[test]
    fn symlinked_proc_dev_or_mount_target_is_refused() {
        for target in ["/proc", "/dev", "/sys", "/etc/hosts"] {
            let sys = image();
            sys.set(target, FileType::Symlink);
            let err = prepare_root(&sys, &plan(&spec(), ROOT).unwrap()).unwrap_err();
            assert!(
                matches!(&err, Error::Refused(m) if m.contains(target)),
                "{target}: {err}"
            );
            assert!(!sys.calls().contains(&"pivot_root".to_string()));
        }
        let sys = image();
        sys.set("/data", FileType::Symlink);
        let mut s = spec();
        s.mounts.push(BindMount::parse("/host:/data").unwrap());
        let err = prepare_root(&sys, &plan(&s, ROOT).unwrap()).unwrap_err();
        assert!(
            matches!(&err, Error::Refused(m) if m.contains("/data")),
            "{err}"
        );
    }

    #[test]
    fn intermediate_symlinks_resolve_in_root_and_are_not_stubs() {
        // Debian's /var/run -> /run: `-v /sock:/var/run/x.sock` must work.
        let sys = image();
        sys.set("/var", FileType::Dir);
        sys.set("/var/run", FileType::Symlink);
        sys.host
            .borrow_mut()
            .insert("/sock".into(), FileType::Other);
        let mut s = spec();
        s.mounts
            .push(BindMount::parse("/sock:/var/run/x.sock").unwrap());
        let stubs = prepare_root(&sys, &plan(&s, ROOT).unwrap()).unwrap();
        assert!(sys
            .calls()
            .contains(&"create /var/run/x.sock 644".to_string()));
        assert!(!stubs.iter().any(|s| s.starts_with("/var")));
    }

    #[test]
    fn file_over_directory_is_an_error() {
        let sys = image();
        sys.set("/etc/hosts", FileType::Dir);
        let err = prepare_root(&sys, &plan(&spec(), ROOT).unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("/etc/hosts is a directory"),
            "{err}"
        );
    }

    #[test]
    fn masks_and_readonly_paths_only_when_present() {
        let sys = image();
        sys.set("/proc/kcore", FileType::File);
        sys.set("/proc/acpi", FileType::Dir);
        sys.set("/proc/sys", FileType::Dir);
        prepare_root(&sys, &plan(&spec(), ROOT).unwrap()).unwrap();
        let calls = sys.calls();
        assert!(calls
            .iter()
            .any(|c| c.starts_with("mount_in_root InRoot(\"/dev/null\") /proc/kcore")));
        assert!(calls
            .iter()
            .any(|c| c.starts_with("mount_in_root Fs(\"tmpfs\") /proc/acpi")
                && c.contains("MS_RDONLY")));
        assert!(calls
            .iter()
            .any(|c| c.starts_with("mount_in_root InRoot(\"/proc/sys\") /proc/sys")));
        assert!(!calls.iter().any(|c| c.contains("/proc/keys")));
    }

    #[test]
    fn userns_binds_devices_instead_of_mknod() {
        let sys = image();
        let p = plan(
            &spec(),
            HostFacts {
                euid: 1000,
                egid: 1000,
            },
        )
        .unwrap();
        prepare_root(&sys, &p).unwrap();
        let calls = sys.calls();
        assert!(!calls.iter().any(|c| c.starts_with("mknod")));
        assert!(calls
            .iter()
            .any(|c| c.starts_with("mount_in_root Host(\"/dev/null\") /dev/null")));
    }

    #[test]
    fn credentials_in_runc_order() {
        let sys = Recording::default();
        let mut p = ProcessSpec::default();
        p.rlimits.push(crate::spec::Rlimit {
            name: "nofile".into(),
            soft: 10,
            hard: 20,
        });
        p.no_new_privs = true;
        let u = ExecUser {
            uid: 1000,
            gid: 1000,
            groups: vec![10, 29],
            home: "/home/lade".into(),
        };
        apply_credentials(&sys, &p, &u, true).unwrap();
        assert_eq!(
            sys.calls(),
            [
                format!("rlimit {} 10 20", libc::RLIMIT_NOFILE),
                "keepcaps true".into(),
                "bounding 0xa80425fb".into(),
                "setgroups [10, 29]".into(),
                "set_ids 1000 1000".into(),
                "capset e=0x0 p=0x0 i=0x0".into(),
                "clear_ambient".into(),
                "keepcaps false".into(),
                "no_new_privs".into(),
            ]
        );
        let sys = Recording::default();
        let root = ExecUser {
            uid: 0,
            gid: 0,
            groups: vec![],
            home: "/root".into(),
        };
        apply_credentials(&sys, &ProcessSpec::default(), &root, false).unwrap();
        let calls = sys.calls();
        assert!(calls.contains(&"capset e=0xa80425fb p=0xa80425fb i=0x0".to_string()));
        assert!(!calls.iter().any(|c| c.starts_with("setgroups")));
    }

    #[test]
    fn rootless_refuses_added_groups_and_skips_image_memberships() {
        // Memberships from the image's /etc/group (root in wheel, say): left out.
        let sys = Recording::default();
        let root = ExecUser {
            uid: 0,
            gid: 0,
            groups: vec![10, 0],
            home: "/root".into(),
        };
        apply_credentials(&sys, &ProcessSpec::default(), &root, false).unwrap();
        assert!(!sys.calls().iter().any(|c| c.starts_with("setgroups")));
        assert!(sys.calls().contains(&"set_ids 0 0".to_string()));
        // --group-add: a clear error before any id changes, as runc's "cannot set any
        // additional groups in a rootless container".
        let sys = Recording::default();
        let p = ProcessSpec {
            additional_groups: vec!["wheel".into(), "29".into()],
            ..Default::default()
        };
        let e = apply_credentials(&sys, &p, &root, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot add groups wheel, 29 in a rootless sandbox")
                && e.contains("run lade as root"),
            "{e}"
        );
        assert!(!sys.calls().iter().any(|c| c.starts_with("set_ids")));
        // With setgroups allowed, they are set.
        let sys = Recording::default();
        apply_credentials(&sys, &p, &root, true).unwrap();
        assert!(sys.calls().contains(&"setgroups [10, 0]".to_string()));
    }

    #[test]
    fn cwd_is_created_and_magic_links_refused() {
        let sys = image();
        enter_cwd(&sys, "/work/dir", ProcessRules::DockerRun, (5, 5)).unwrap();
        assert_eq!(
            sys.calls(),
            [
                "mkdir /work 755",
                "mkdir /work/dir 755",
                "chdir_in_root /work/dir"
            ]
        );
        let sys = image();
        sys.fail
            .borrow_mut()
            .push(("chdir_in_root".into(), Errno::EXDEV));
        sys.set("/proc/self", FileType::Symlink);
        sys.set("/proc/self/fd", FileType::Dir);
        sys.set("/proc/self/fd/7", FileType::Symlink);
        let err = enter_cwd(&sys, "/proc/self/fd/7", ProcessRules::DockerRun, (0, 0)).unwrap_err();
        assert!(matches!(err, Error::Refused(_)), "{err}");
    }

    #[test]
    fn missing_cwd_owner_and_dotdot_follow_the_rules() {
        let sys = image();
        enter_cwd(&sys, "/wd/deep", ProcessRules::BuildKitRun, (1000, 1000)).unwrap();
        assert_eq!(
            sys.calls(),
            [
                "mkdir /wd 755",
                "chown /wd 1000:1000",
                "mkdir /wd/deep 755",
                "chown /wd/deep 1000:1000",
                "chdir_in_root /wd/deep"
            ]
        );
        // `..`: the resolved path as the user, then what the path as written still lacks as
        // root (runc's MkdirAll of the unclean cwd)
        let sys = image();
        sys.set("/a", FileType::Dir);
        enter_cwd(&sys, "/a/b/../c", ProcessRules::BuildKitRun, (7, 8)).unwrap();
        assert_eq!(
            sys.calls(),
            [
                "mkdir /a/c 755",
                "chown /a/c 7:8",
                "mkdir /a/b 755",
                "chdir_in_root /a/b/../c"
            ]
        );
        // docker run: cleaned first, made by root
        let sys = image();
        sys.set("/a", FileType::Dir);
        enter_cwd(&sys, "/a/b/../c", ProcessRules::DockerRun, (7, 8)).unwrap();
        assert_eq!(sys.calls(), ["mkdir /a/c 755", "chdir_in_root /a/c"]);
    }

    #[test]
    fn user_is_read_from_the_image() {
        let sys = image();
        sys.files.borrow_mut().insert(
            "/etc/passwd".into(),
            b"root:x:0:0::/root:/bin/sh\nlade:x:1000:1000::/home/lade:/bin/sh\n".to_vec(),
        );
        sys.files
            .borrow_mut()
            .insert("/etc/group".into(), b"wheel:x:10:lade\n".to_vec());
        let p = ProcessSpec {
            user: "lade".into(),
            ..ProcessSpec::default()
        };
        let u = resolve_user(&sys, &p).unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups.clone()),
            (1000, 1000, vec![10, 1000])
        );
        let u = resolve_user(&sys, &ProcessSpec::default()).unwrap();
        assert_eq!(u.home, "/root");
        // BuildKit's RUN: no primary gid in the list, no groups for an empty user
        let p = ProcessSpec {
            user: "lade".into(),
            rules: ProcessRules::BuildKitRun,
            ..ProcessSpec::default()
        };
        assert_eq!(resolve_user(&sys, &p).unwrap().groups, vec![10]);
        let p = ProcessSpec {
            rules: ProcessRules::BuildKitRun,
            ..ProcessSpec::default()
        };
        let u = resolve_user(&sys, &p).unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups, u.home.as_str()),
            (0, 0, vec![], "/root")
        );
    }
}
