//! Turns a [`SandboxSpec`] into a [`Plan`]: which namespaces, which root mount, and the ordered
//! list of mounts, device nodes and links to make inside the new root. Pure data, no system
//! calls, so every decision here is unit-tested without root.

use std::path::PathBuf;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use crate::spec::{clean_path, IdMap, NetworkMode, Rootfs, SandboxSpec, UserNamespace};
use crate::{Error, Result};

/// Facts about the calling process that change the plan.
#[derive(Debug, Clone, Copy)]
pub struct HostFacts {
    pub euid: u32,
    pub egid: u32,
}

/// The user namespace to create, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNs {
    pub uid_map: Vec<IdMap>,
    pub gid_map: Vec<IdMap>,
    /// Write `deny` to `/proc/self/setgroups` first (needed for an unprivileged gid map).
    pub deny_setgroups: bool,
}

/// How the root is mounted before `pivot_root`: always on [`Plan::root_mountpoint`], a
/// directory of the private tmpfs the init mounts over the scratch dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootMount {
    /// overlayfs. The directories are opened first and named to the kernel as
    /// `/proc/self/fd/N`, so the options stay short whatever the paths (and the scratch dir
    /// can be covered by the tmpfs afterwards).
    Overlay {
        lowerdirs: Vec<PathBuf>,
        upperdir: PathBuf,
        workdir: PathBuf,
        /// Options after lowerdir/upperdir/workdir, starting with a comma.
        extra: &'static str,
    },
    /// `mount --rbind PATH` (then read-only when asked).
    Bind { path: PathBuf, readonly: bool },
}

/// What a mount target must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// One step of the in-root setup, applied in order. Targets are absolute, lexically clean
/// paths inside the new root; they are resolved inside it by the kernel (never through a
/// symlink at the last component, never through a magic link).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Mount a fresh filesystem on a directory (created when missing).
    Mount {
        fstype: &'static str,
        source: &'static str,
        target: String,
        flags: MsFlags,
        data: String,
    },
    /// Bind-mount a host file or directory (created when missing, with the source's kind).
    Bind {
        source: PathBuf,
        target: String,
        recursive: bool,
        readonly: bool,
        /// Flags to keep when remounting read-only (locked flags inside a user namespace).
        keep: MsFlags,
    },
    /// A character device in the fresh `/dev` tmpfs: `mknod`, or a bind of the host's node when
    /// a user namespace forbids `mknod`.
    Device {
        target: String,
        major: u32,
        minor: u32,
        bind_from_host: bool,
    },
    Symlink {
        target: String,
        link: String,
    },
    /// Hide a path (if it exists): `/dev/null` over a file, an empty read-only tmpfs over a dir.
    Mask {
        target: String,
    },
    /// Make a path (if it exists) read-only: bind it on itself and remount read-only.
    ReadOnly {
        target: String,
    },
}

/// Everything the sandbox init does, decided up front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub userns: Option<UserNs>,
    /// Namespaces unshared after the user namespace.
    pub namespaces: CloneFlags,
    /// The scratch dir; the init mounts a private tmpfs over it (only its own mount namespace
    /// sees it) holding the root mount point and the generated `/etc` files, so a sandbox
    /// writes nothing to disk but its overlay work dir.
    pub scratch: PathBuf,
    /// Files written into the scratch tmpfs (name, contents), bind-mounted by the steps.
    pub scratch_files: Vec<(&'static str, String)>,
    pub root: RootMount,
    pub steps: Vec<Step>,
    pub hostname: String,
    pub loopback_up: bool,
}

/// Names inside the scratch tmpfs.
pub(crate) mod scratch {
    pub const ROOT: &str = "root";
    pub const HOSTS: &str = "hosts";
    pub const RESOLV: &str = "resolv.conf";
    pub const HOSTNAME: &str = "hostname";
}

impl Plan {
    /// Where the root is mounted before `pivot_root` (inside the scratch tmpfs).
    pub fn root_mountpoint(&self) -> PathBuf {
        self.scratch.join(scratch::ROOT)
    }
}

/// Most lowerdirs one overlay mount takes here: every dir is named `/proc/self/fd/N` (at most
/// 19 bytes with its separator) within the kernel's one-page mount data.
pub const MAX_LAYERS: usize = 200;

/// Docker's default masked paths.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's default read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The xattr namespace overlayfs reads and writes its metadata in (opaque directories) for a
/// sandbox with `user_namespace` started by `euid`: `"trusted.overlay."` without a user
/// namespace, `"user.overlay."` with one (the overlay is then mounted with `userxattr`).
/// Lowerdirs must be marked in the same namespace: the store unpacks snapshots with `trusted.*`
/// as root and `user.*` otherwise, which is what [`UserNamespace::Auto`] gives.
pub fn overlay_xattr_prefix(user_namespace: &UserNamespace, euid: u32) -> &'static str {
    match user_namespace {
        UserNamespace::Auto if euid == 0 => "trusted.overlay.",
        _ => "user.overlay.",
    }
}

/// Builds the plan.
pub fn plan(spec: &SandboxSpec, host: HostFacts) -> Result<Plan> {
    spec.validate()?;
    let userns = match &spec.user_namespace {
        UserNamespace::Auto if host.euid == 0 => None,
        UserNamespace::Auto | UserNamespace::MapCaller => Some(UserNs {
            uid_map: vec![IdMap {
                inside: 0,
                outside: host.euid,
                count: 1,
            }],
            gid_map: vec![IdMap {
                inside: 0,
                outside: host.egid,
                count: 1,
            }],
            // Without CAP_SETGID in the parent namespace (we are inside the new one when
            // writing the map) the kernel only takes a gid map after setgroups is denied.
            deny_setgroups: true,
        }),
        UserNamespace::Mapped { uid_map, gid_map } => {
            if host.euid != 0 {
                return Err(Error::InvalidSpec(
                    "custom user namespace mappings need root; use MapCaller".into(),
                ));
            }
            if uid_map.is_empty() || gid_map.is_empty() {
                return Err(Error::InvalidSpec(
                    "user namespace mappings must not be empty".into(),
                ));
            }
            Some(UserNs {
                uid_map: uid_map.clone(),
                gid_map: gid_map.clone(),
                deny_setgroups: false,
            })
        }
    };
    let in_userns = userns.is_some();

    let mut namespaces = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if spec.network == NetworkMode::None {
        namespaces |= CloneFlags::CLONE_NEWNET;
    }

    let root = match &spec.rootfs {
        Rootfs::Overlay {
            lowerdirs,
            upperdir,
        } => {
            if lowerdirs.len() > MAX_LAYERS {
                return Err(Error::InvalidSpec(format!(
                    "{} lowerdirs are more than one overlay mount takes ({MAX_LAYERS}); \
                     squash some layers",
                    lowerdirs.len()
                )));
            }
            RootMount::Overlay {
                lowerdirs: lowerdirs.clone(),
                upperdir: upperdir.clone(),
                // overlayfs makes its `work/` inside; same filesystem as the upperdir.
                workdir: spec.scratch.clone(),
                // Kernel defaults for redirect_dir/metacopy/index vary with its config; turn
                // them off so the upperdir is always the plain format the layer writer reads:
                // full copies, whiteouts as 0:0 character devices and opaque-dir xattrs. In a
                // user namespace overlayfs stores its xattrs as user.overlay.* and refuses the
                // redirect/metacopy options (they are off there anyway).
                extra: if in_userns {
                    ",index=off,userxattr"
                } else {
                    ",index=off,redirect_dir=off,metacopy=off"
                },
            }
        }
        Rootfs::Dir { path, readonly } => RootMount::Bind {
            path: path.clone(),
            readonly: *readonly,
        },
    };

    let nosuid_noexec_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let mut steps = vec![
        Step::Mount {
            fstype: "proc",
            source: "proc",
            target: "/proc".into(),
            flags: nosuid_noexec_nodev,
            data: String::new(),
        },
        Step::Mount {
            fstype: "tmpfs",
            source: "tmpfs",
            target: "/dev".into(),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            data: "mode=755,size=65536k".into(),
        },
        Step::Mount {
            fstype: "devpts",
            source: "devpts",
            target: "/dev/pts".into(),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            // gid=5 (tty) only exists for sure outside a user namespace.
            data: if in_userns {
                "newinstance,ptmxmode=0666,mode=0620".into()
            } else {
                "newinstance,ptmxmode=0666,mode=0620,gid=5".into()
            },
        },
        Step::Mount {
            fstype: "tmpfs",
            source: "shm",
            target: "/dev/shm".into(),
            flags: nosuid_noexec_nodev,
            data: "mode=1777,size=65536k".into(),
        },
        Step::Mount {
            fstype: "mqueue",
            source: "mqueue",
            target: "/dev/mqueue".into(),
            flags: nosuid_noexec_nodev,
            data: String::new(),
        },
    ];
    if in_userns && spec.network == NetworkMode::Host {
        // sysfs can only be mounted by the owner of the network namespace.
        steps.push(Step::Bind {
            source: "/sys".into(),
            target: "/sys".into(),
            recursive: true,
            readonly: true,
            keep: nosuid_noexec_nodev,
        });
    } else {
        steps.push(Step::Mount {
            fstype: "sysfs",
            source: "sysfs",
            target: "/sys".into(),
            flags: nosuid_noexec_nodev | MsFlags::MS_RDONLY,
            data: String::new(),
        });
    }
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        steps.push(Step::Device {
            target: format!("/dev/{name}"),
            major,
            minor,
            bind_from_host: in_userns,
        });
    }
    for (target, link) in [
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
        ("pts/ptmx", "/dev/ptmx"),
    ] {
        steps.push(Step::Symlink {
            target: target.into(),
            link: link.into(),
        });
    }
    let mut etc = Vec::new();
    if spec.etc.hostname_file {
        etc.push((scratch::HOSTNAME, "/etc/hostname"));
    }
    etc.push((scratch::HOSTS, "/etc/hosts"));
    etc.push((scratch::RESOLV, "/etc/resolv.conf"));
    for (file, target) in etc {
        steps.push(Step::Bind {
            source: spec.scratch.join(file),
            target: target.into(),
            recursive: false,
            readonly: false,
            keep: MsFlags::empty(),
        });
    }
    for m in &spec.mounts {
        steps.push(Step::Bind {
            source: m.source.clone(),
            target: clean_path(&m.destination),
            recursive: true,
            readonly: m.readonly,
            // Keep whatever the source mount had locked (nosuid/nodev/noexec) when in a
            // user namespace; outside one the remount is free.
            keep: MsFlags::empty(),
        });
    }
    for p in MASKED_PATHS {
        steps.push(Step::Mask {
            target: (*p).into(),
        });
    }
    for p in READONLY_PATHS {
        steps.push(Step::ReadOnly {
            target: (*p).into(),
        });
    }

    Ok(Plan {
        userns,
        namespaces,
        scratch: spec.scratch.clone(),
        scratch_files: spec
            .etc
            .hostname_file
            .then(|| (scratch::HOSTNAME, format!("{}\n", spec.hostname)))
            .into_iter()
            .chain([
                (scratch::HOSTS, spec.etc.hosts.clone()),
                (scratch::RESOLV, spec.etc.resolv_conf.clone()),
            ])
            .collect(),
        root,
        steps,
        hostname: spec.hostname.clone(),
        loopback_up: spec.network == NetworkMode::None,
    })
}

/// `RLIMIT_*` number of a docker `--ulimit` name.
pub fn rlimit_resource(name: &str) -> Result<u32> {
    Ok(match name {
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "fsize" => libc::RLIMIT_FSIZE,
        "locks" => libc::RLIMIT_LOCKS,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "rss" => libc::RLIMIT_RSS,
        "rtprio" => libc::RLIMIT_RTPRIO,
        "rttime" => libc::RLIMIT_RTTIME,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "stack" => libc::RLIMIT_STACK,
        "as" => libc::RLIMIT_AS,
        other => {
            return Err(Error::InvalidSpec(format!(
                "unknown rlimit `{other}` (use nofile, nproc, core, stack, ...)"
            )))
        }
    } as u32)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::spec::BindMount;
    use std::path::Path;

    fn spec() -> SandboxSpec {
        SandboxSpec::new(
            Rootfs::Overlay {
                lowerdirs: vec!["/store/snap/2".into(), "/store/snap/1".into()],
                upperdir: "/store/ctr/x/upper".into(),
            },
            "/store/ctr/x/scratch",
            vec!["true".into()],
        )
    }
    const ROOT: HostFacts = HostFacts { euid: 0, egid: 0 };

    #[test]
    fn root_gets_all_namespaces_but_user() {
        let p = plan(&spec(), ROOT).unwrap();
        assert!(p.userns.is_none());
        for f in [
            CloneFlags::CLONE_NEWNS,
            CloneFlags::CLONE_NEWPID,
            CloneFlags::CLONE_NEWUTS,
            CloneFlags::CLONE_NEWIPC,
            CloneFlags::CLONE_NEWNET,
        ] {
            assert!(p.namespaces.contains(f), "{f:?}");
        }
        assert!(p.loopback_up);
    }

    #[test]
    fn host_network_shares_the_netns() {
        let mut s = spec();
        s.network = NetworkMode::Host;
        let p = plan(&s, ROOT).unwrap();
        assert!(!p.namespaces.contains(CloneFlags::CLONE_NEWNET));
        assert!(!p.loopback_up);
    }

    #[test]
    fn overlay_layers_topmost_first_and_a_layer_limit() {
        let p = plan(&spec(), ROOT).unwrap();
        assert_eq!(
            p.root,
            RootMount::Overlay {
                lowerdirs: vec!["/store/snap/2".into(), "/store/snap/1".into()],
                upperdir: "/store/ctr/x/upper".into(),
                workdir: "/store/ctr/x/scratch".into(),
                extra: ",index=off,redirect_dir=off,metacopy=off",
            }
        );
        assert_eq!(
            p.root_mountpoint(),
            PathBuf::from("/store/ctr/x/scratch/root")
        );
        let mut s = spec();
        s.rootfs = Rootfs::Overlay {
            lowerdirs: (0..=MAX_LAYERS)
                .map(|i| PathBuf::from(format!("/l/{i}")))
                .collect(),
            upperdir: "/u".into(),
        };
        // Far too many layers: a clear error, not a kernel EINVAL.
        assert!(plan(&s, ROOT).unwrap_err().to_string().contains("squash"));
    }

    #[test]
    fn default_mounts_in_docker_order() {
        let p = plan(&spec(), ROOT).unwrap();
        let targets: Vec<&str> = p
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Mount { target, .. } => Some(target.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            targets,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys"
            ]
        );
        let sys = p
            .steps
            .iter()
            .find(|s| matches!(s, Step::Mount { target, .. } if target == "/sys"))
            .unwrap();
        match sys {
            Step::Mount { flags, .. } => assert!(flags.contains(MsFlags::MS_RDONLY)),
            _ => unreachable!(),
        }
        assert!(p.steps.contains(&Step::Device {
            target: "/dev/null".into(),
            major: 1,
            minor: 3,
            bind_from_host: false
        }));
        assert!(p.steps.contains(&Step::Symlink {
            target: "pts/ptmx".into(),
            link: "/dev/ptmx".into()
        }));
        assert!(p.steps.contains(&Step::Mask {
            target: "/proc/kcore".into()
        }));
        assert!(p.steps.contains(&Step::ReadOnly {
            target: "/proc/sysrq-trigger".into()
        }));
    }

    #[test]
    fn etc_files_come_from_scratch_and_user_binds_follow() {
        let mut s = spec();
        s.mounts
            .push(BindMount::parse("/data:/mnt/../data/:ro").unwrap());
        let p = plan(&s, ROOT).unwrap();
        let binds: Vec<(&Path, &str, bool)> = p
            .steps
            .iter()
            .filter_map(|st| match st {
                Step::Bind {
                    source,
                    target,
                    readonly,
                    ..
                } => Some((source.as_path(), target.as_str(), *readonly)),
                _ => None,
            })
            .collect();
        assert_eq!(
            binds,
            [
                (
                    Path::new("/store/ctr/x/scratch/hostname"),
                    "/etc/hostname",
                    false
                ),
                (Path::new("/store/ctr/x/scratch/hosts"), "/etc/hosts", false),
                (
                    Path::new("/store/ctr/x/scratch/resolv.conf"),
                    "/etc/resolv.conf",
                    false
                ),
                (Path::new("/data"), "/data", true),
            ]
        );
    }

    #[test]
    fn buildkit_run_leaves_etc_hostname_to_the_image() {
        let mut s = spec();
        s.etc = s.etc.clone().without_hostname_file();
        let p = plan(&s, ROOT).unwrap();
        let targets: Vec<&str> = p
            .steps
            .iter()
            .filter_map(|st| match st {
                Step::Bind { target, .. } => Some(target.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(targets, ["/etc/hosts", "/etc/resolv.conf"]);
        let files: Vec<&str> = p.scratch_files.iter().map(|(n, _)| *n).collect();
        assert_eq!(files, [scratch::HOSTS, scratch::RESOLV]);
        assert_eq!(p.hostname, "lade", "the UTS hostname is still set");
    }

    #[test]
    fn non_root_gets_a_user_namespace_and_bound_devices() {
        let p = plan(
            &spec(),
            HostFacts {
                euid: 1000,
                egid: 1000,
            },
        )
        .unwrap();
        let u = p.userns.unwrap();
        assert_eq!(
            u.uid_map,
            [IdMap {
                inside: 0,
                outside: 1000,
                count: 1
            }]
        );
        assert!(u.deny_setgroups);
        assert!(p.steps.contains(&Step::Device {
            target: "/dev/null".into(),
            major: 1,
            minor: 3,
            bind_from_host: true
        }));
        match p.root {
            RootMount::Overlay { extra, .. } => assert!(extra.ends_with(",userxattr")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn overlay_xattr_namespace_follows_the_user_namespace() {
        for (userns, euid, want) in [
            (UserNamespace::Auto, 0, "trusted.overlay."),
            (UserNamespace::Auto, 1000, "user.overlay."),
            (UserNamespace::MapCaller, 0, "user.overlay."),
        ] {
            assert_eq!(overlay_xattr_prefix(&userns, euid), want);
            let mut s = spec();
            s.user_namespace = userns.clone();
            let p = plan(&s, HostFacts { euid, egid: euid }).unwrap();
            let userxattr = match p.root {
                RootMount::Overlay { extra, .. } => extra.contains("userxattr"),
                other => panic!("{other:?}"),
            };
            assert_eq!(userxattr, want == "user.overlay.", "{userns:?} {euid}");
        }
    }

    #[test]
    fn rlimit_names() {
        assert_eq!(rlimit_resource("nofile").unwrap(), 7);
        assert!(rlimit_resource("bogus").is_err());
    }
}
