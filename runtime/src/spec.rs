//! What a sandbox is asked to run: rootfs, mounts, network, hostname and the process.
//!
//! Plain data, serialised as JSON to the sandbox init over a socket. Validation that needs no
//! system call lives here ([`SandboxSpec::validate`]); everything that touches the kernel is in
//! `plan`/`setup`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Everything needed to start one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// The root filesystem.
    pub rootfs: Rootfs,
    /// A directory the runtime creates (it must not exist) and owns for this sandbox, removed
    /// when the sandbox is finished. It is the overlay work dir (so for an overlay rootfs it must
    /// be on the same filesystem as the upperdir); inside the sandbox's mount namespace a private
    /// tmpfs covers it, holding the root mount point and the generated `/etc` files.
    pub scratch: PathBuf,
    /// The process to start as pid 1.
    pub process: ProcessSpec,
    /// Hostname inside the sandbox (new UTS namespace). Must be a valid hostname.
    pub hostname: String,
    /// Network namespace.
    pub network: NetworkMode,
    /// Bind mounts from the host, applied in order after the default mounts.
    pub mounts: Vec<BindMount>,
    /// Contents of `/etc/hosts` and `/etc/resolv.conf` (bind-mounted read-write from files in
    /// `scratch`, never written into the rootfs). `/etc/hostname` is made from `hostname`.
    pub etc: EtcFiles,
    /// User namespace: off (the default when lade runs as root), or mapped.
    pub user_namespace: UserNamespace,
}

/// Root filesystem of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rootfs {
    /// overlayfs. `lowerdirs` are immutable directories in containerd's overlay-snapshotter
    /// format (whiteouts as 0:0 character devices, opaque directories marked with the
    /// `overlay.opaque` xattr: `trusted.overlay.opaque` when the sandbox has no user namespace,
    /// `user.overlay.opaque` when it has one, where the overlay is mounted with `userxattr`:
    /// see [`crate::plan::overlay_xattr_prefix`]), topmost first; at least one (an empty directory for
    /// `FROM scratch`), at most [`crate::plan::MAX_LAYERS`]. `upperdir` is created by the runtime (it
    /// must not exist) and holds every change when the sandbox has finished: it is the result.
    Overlay {
        lowerdirs: Vec<PathBuf>,
        upperdir: PathBuf,
    },
    /// A plain directory used in place (bind-mounted): writes go straight into it.
    Dir { path: PathBuf, readonly: bool },
}

/// Network mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NetworkMode {
    /// A new network namespace with only `lo`, up.
    #[default]
    None,
    /// Share the host's network namespace (explicit opt-in).
    Host,
}

/// A bind mount from the host into the sandbox (`-v SRC:DST[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Absolute host path (file or directory). Must exist.
    pub source: PathBuf,
    /// Absolute path inside the sandbox. Created (as an empty file or directory) when missing;
    /// refused when it is a symlink in the rootfs.
    pub destination: String,
    pub readonly: bool,
}

impl BindMount {
    /// Parses docker's `-v SRC:DST[:ro|:rw]` short form (absolute host paths only: lade has no
    /// named volumes).
    pub fn parse(text: &str) -> Result<Self> {
        let parts: Vec<&str> = text.split(':').collect();
        let (src, dst, mode) = match parts.as_slice() {
            [s, d] => (*s, *d, None),
            [s, d, m] => (*s, *d, Some(*m)),
            _ => {
                return Err(Error::InvalidSpec(format!(
                    "volume `{text}`: expected SRC:DST or SRC:DST:ro"
                )))
            }
        };
        let readonly = match mode {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(other) => {
                return Err(Error::InvalidSpec(format!(
                    "volume `{text}`: unknown mode `{other}` (use ro or rw)"
                )))
            }
        };
        if !src.starts_with('/') {
            return Err(Error::InvalidSpec(format!(
                "volume `{text}`: source must be an absolute host path"
            )));
        }
        if !dst.starts_with('/') {
            return Err(Error::InvalidSpec(format!(
                "volume `{text}`: destination must be an absolute path"
            )));
        }
        Ok(Self {
            source: PathBuf::from(src),
            destination: dst.to_string(),
            readonly,
        })
    }
}

/// Generated `/etc` files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcFiles {
    pub hosts: String,
    pub resolv_conf: String,
    /// Bind-mount a generated `/etc/hostname` holding [`SandboxSpec::hostname`], as docker run
    /// does. BuildKit's RUN mounts only `/etc/hosts` and `/etc/resolv.conf`: the image's own
    /// `/etc/hostname` (if any) stays visible, and a RUN can remove or replace it.
    #[serde(default = "yes")]
    pub hostname_file: bool,
}

fn yes() -> bool {
    true
}

impl EtcFiles {
    /// What docker gives a container: for `--network none` a localhost-only `/etc/hosts`, for
    /// `--network host` the host's; the host's resolv.conf either way. (BuildKit also maps the
    /// hostname to 127.0.0.1 for RUN: see [`EtcFiles::with_hostname_entry`].)
    pub fn docker_defaults(network: NetworkMode) -> Self {
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        match network {
            NetworkMode::Host => Self {
                hosts: std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| default_hosts()),
                resolv_conf: host_resolv,
                hostname_file: true,
            },
            NetworkMode::None => Self {
                hosts: default_hosts(),
                resolv_conf: host_resolv,
                hostname_file: true,
            },
        }
    }

    /// Leaves `/etc/hostname` to the image (BuildKit's RUN; the hostname is still set in the
    /// UTS namespace).
    pub fn without_hostname_file(mut self) -> Self {
        self.hostname_file = false;
        self
    }

    /// Adds `127.0.0.1 HOSTNAME` to `/etc/hosts`, as BuildKit does for RUN steps.
    pub fn with_hostname_entry(mut self, hostname: &str) -> Self {
        self.hosts.push_str(&format!("127.0.0.1\t{hostname}\n"));
        self
    }
}

fn default_hosts() -> String {
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
     ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
        .to_string()
}

/// User namespace choice.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum UserNamespace {
    /// No user namespace when lade runs as root; when it does not, the caller's uid and gid
    /// are mapped to root inside (a single-id mapping, no helper binary needed).
    #[default]
    Auto,
    /// A user namespace with the caller's uid and gid mapped to root inside.
    MapCaller,
    /// A user namespace with these mappings (needs root).
    Mapped {
        uid_map: Vec<IdMap>,
        gid_map: Vec<IdMap>,
    },
}

/// One line of `/proc/PID/uid_map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// The process started in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// argv; `args[0]` without a `/` is looked up in the process's own `PATH`, inside the
    /// sandbox.
    pub args: Vec<String>,
    /// `KEY=VALUE` entries. `HOME` is added from the user's passwd entry when missing (as runc
    /// does); see [`docker_env`] for docker's other defaults.
    pub env: Vec<String>,
    /// Absolute working directory; created (mode 0755) when missing, owned as [`Self::rules`]
    /// say.
    pub cwd: String,
    /// `USER[:GROUP]`, names or numbers, resolved from the rootfs's `/etc/passwd` and
    /// `/etc/group`. Empty means root.
    pub user: String,
    /// Extra supplementary groups (names or numbers), added to those `/etc/group` gives the
    /// user (docker's `--group-add`).
    pub additional_groups: Vec<String>,
    /// docker run's or BuildKit RUN's rules (supplementary groups, working directory owner).
    #[serde(default)]
    pub rules: ProcessRules,
    /// Resource limits; each must stay within the host's hard limit.
    pub rlimits: Vec<Rlimit>,
    /// Set `PR_SET_NO_NEW_PRIVS` before exec (docker's `no-new-privileges`).
    pub no_new_privs: bool,
    /// Capabilities kept; `None` means docker's default set.
    pub capabilities: Option<Vec<String>>,
    /// Allocate a pseudo-terminal (in the sandbox's own devpts) for stdio; the master comes back
    /// to the caller through [`crate::Sandbox::take_pty`].
    pub tty: bool,
    /// Initial terminal size when `tty`.
    pub console_size: Option<ConsoleSize>,
    /// Put a minimal init as pid 1 that reaps zombies and forwards signals (`--init`).
    pub init: bool,
}

impl Default for ProcessSpec {
    fn default() -> Self {
        Self {
            args: Vec::new(),
            env: Vec::new(),
            cwd: "/".into(),
            user: String::new(),
            additional_groups: Vec::new(),
            rules: ProcessRules::DockerRun,
            rlimits: Vec::new(),
            no_new_privs: false,
            capabilities: None,
            tty: false,
            console_size: None,
            init: false,
        }
    }
}

/// Whose rules the process setup follows where `docker run` and BuildKit's RUN differ.
///
/// Supplementary groups (beyond [`ProcessSpec::additional_groups`]): both take `/etc/group`'s
/// memberships of a user named without a group (`lade`, or `1000` when uid 1000 is in
/// `/etc/passwd`) and none when a group is given (`lade:wheel`, `1000:29`) or the uid is
/// unknown (runc's `GetExecUser`). A missing working directory is created `0755` either way;
/// docker cleans the path first, BuildKit keeps it as written (`/a/b/../c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ProcessRules {
    /// `docker run`: an empty user is root with root's memberships; the primary gid is added
    /// to the groups (moby's fix of CVE-2022-36109); the working directory is cleaned, and
    /// created owned by root when missing.
    #[default]
    DockerRun,
    /// BuildKit's RUN (its runc executor): an empty user is `0:0` with no groups at all; the
    /// primary gid is not added; a missing working directory is created owned by the user
    /// (`idtools.MkdirAllAndChown` of the path resolved in the rootfs), then runc creates
    /// what the path as written still lacks (a `..` component) as root.
    BuildKitRun,
}

/// Terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleSize {
    pub rows: u16,
    pub cols: u16,
}

/// One resource limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// Name as docker's `--ulimit` takes it: `nofile`, `nproc`, `core`, `cpu`, `data`, `fsize`,
    /// `locks`, `memlock`, `msgqueue`, `nice`, `rss`, `rtprio`, `rttime`, `sigpending`, `stack`,
    /// `as`.
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// `PATH` docker gives a container whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment docker gives a container whose configured environment (image env merged
/// with `-e`/`--env-file`, see docker's `merge`) is `env`: `PATH` (docker's default), `HOSTNAME`
/// and, with a tty, `TERM=xterm` first, then `env` replacing or appending entry by entry
/// (moby's `ReplaceOrAppendEnvValues`): a later `K=V` replaces an earlier `K` in place, and a
/// bare `K` (no `=`) removes `K`. `HOME` is added later, from the user's passwd entry, when
/// still missing.
pub fn docker_env(env: &[String], hostname: &str, tty: bool) -> Vec<String> {
    let mut out = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
    ];
    if tty {
        out.push("TERM=xterm".into());
    }
    replace_or_append_env(out, env)
}

/// moby's `ReplaceOrAppendEnvValues`: each of `overrides` replaces the entry of `defaults`
/// with the same key in place or is appended; an override without `=` removes its key.
pub fn replace_or_append_env(mut defaults: Vec<String>, overrides: &[String]) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let mut index: std::collections::HashMap<String, usize> = defaults
        .iter()
        .enumerate()
        .map(|(i, e)| (key(e), i))
        .collect();
    let mut removed = vec![false; defaults.len()];
    for o in overrides {
        match o.split_once('=') {
            None => {
                if let Some(&i) = index.get(o.as_str()) {
                    removed[i] = true;
                }
            }
            Some((k, _)) => match index.get(k) {
                Some(&i) => {
                    defaults[i] = o.clone();
                    removed[i] = false;
                }
                None => {
                    index.insert(k.to_string(), defaults.len());
                    defaults.push(o.clone());
                    removed.push(false);
                }
            },
        }
    }
    defaults
        .into_iter()
        .zip(removed)
        .filter(|(_, r)| !r)
        .map(|(e, _)| e)
        .collect()
}

impl SandboxSpec {
    /// A spec with docker's defaults for everything but the rootfs, scratch dir and argv.
    pub fn new(rootfs: Rootfs, scratch: impl Into<PathBuf>, args: Vec<String>) -> Self {
        let hostname = "lade".to_string();
        Self {
            rootfs,
            scratch: scratch.into(),
            process: ProcessSpec {
                args,
                env: docker_env(&[], &hostname, false),
                ..ProcessSpec::default()
            },
            etc: EtcFiles::docker_defaults(NetworkMode::None),
            hostname,
            network: NetworkMode::None,
            mounts: Vec::new(),
            user_namespace: UserNamespace::Auto,
        }
    }

    /// Checks what can be checked without touching the system.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidSpec(m));
        if self.process.args.is_empty() {
            return bad("no command given: the process needs at least argv[0]".into());
        }
        if self.process.args[0].is_empty() {
            return bad("argv[0] is empty".into());
        }
        if !self.scratch.is_absolute() {
            return bad(format!(
                "scratch dir {} must be absolute",
                self.scratch.display()
            ));
        }
        match &self.rootfs {
            Rootfs::Overlay {
                lowerdirs,
                upperdir,
            } => {
                if lowerdirs.is_empty() {
                    return bad("overlay rootfs needs at least one lowerdir".into());
                }
                for p in lowerdirs.iter().chain(std::iter::once(upperdir)) {
                    check_overlay_path(p)?;
                }
                check_overlay_path(&self.scratch)?;
            }
            Rootfs::Dir { path, .. } => {
                if !path.is_absolute() {
                    return bad(format!("rootfs {} must be absolute", path.display()));
                }
            }
        }
        if !self.process.cwd.starts_with('/') {
            return bad(format!(
                "working directory `{}` must be absolute",
                self.process.cwd
            ));
        }
        if !valid_hostname(&self.hostname) {
            return bad(format!(
                "invalid hostname `{}`: use letters, digits, `-` and `.`, at most 63 characters",
                self.hostname
            ));
        }
        for e in &self.process.env {
            if !e.contains('=') || e.starts_with('=') || e.contains('\0') {
                return bad(format!("environment entry `{e}` is not KEY=VALUE"));
            }
        }
        for a in &self.process.args {
            if a.contains('\0') {
                return bad("an argument contains a NUL byte".into());
            }
        }
        for m in &self.mounts {
            if !m.source.is_absolute() {
                return bad(format!(
                    "bind mount source {} must be absolute",
                    m.source.display()
                ));
            }
            if !m.destination.starts_with('/') || m.destination.contains('\0') {
                return bad(format!(
                    "bind mount destination `{}` must be absolute",
                    m.destination
                ));
            }
            if clean_path(&m.destination) == "/" {
                return bad("a bind mount cannot replace the root directory".into());
            }
        }
        for r in &self.process.rlimits {
            crate::plan::rlimit_resource(&r.name)?;
            if r.soft > r.hard {
                return bad(format!(
                    "rlimit {}: soft limit {} is above the hard limit {}",
                    r.name, r.soft, r.hard
                ));
            }
        }
        if let Some(caps) = &self.process.capabilities {
            for c in caps {
                crate::caps::by_name(c)?;
            }
        }
        Ok(())
    }
}

fn check_overlay_path(p: &Path) -> Result<()> {
    if !p.is_absolute() {
        return Err(Error::InvalidSpec(format!(
            "overlay path {} must be absolute",
            p.display()
        )));
    }
    Ok(())
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && !h.starts_with('-')
}

/// Lexically normalises an in-sandbox path: always absolute, no `.`, `..` (never above `/`) or
/// empty components. Symlinks are resolved later, inside the rootfs, by the kernel.
pub fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = String::with_capacity(p.len());
    for c in &parts {
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_volumes() {
        let m = BindMount::parse("/src:/dst:ro").unwrap();
        assert_eq!(m.source, PathBuf::from("/src"));
        assert_eq!(m.destination, "/dst");
        assert!(m.readonly);
        assert!(!BindMount::parse("/a:/b").unwrap().readonly);
        assert!(!BindMount::parse("/a:/b:rw").unwrap().readonly);
        for bad in ["a:/b", "/a:b", "/a", "/a:/b:xx", "/a:/b:ro:x"] {
            assert!(BindMount::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cleans_paths() {
        assert_eq!(clean_path("/"), "/");
        assert_eq!(clean_path("/a/./b//c/"), "/a/b/c");
        assert_eq!(clean_path("/../../etc/../x"), "/x");
        assert_eq!(clean_path(""), "/");
    }

    #[test]
    fn docker_env_defaults() {
        let env = docker_env(&["A=1".into(), "A=2".into()], "h", true);
        assert_eq!(
            env,
            vec![
                format!("PATH={DEFAULT_PATH}"),
                "HOSTNAME=h".to_string(),
                "TERM=xterm".to_string(),
                "A=2".to_string(),
            ]
        );
        let env = docker_env(&["PATH=/x".into(), "TERM=dumb".into()], "h", false);
        assert_eq!(env, ["PATH=/x", "HOSTNAME=h", "TERM=dumb"]);
        // A bare key unsets, as `docker run -e KEY` does when KEY is not set on the host.
        let env = docker_env(&["X=1".into(), "HOSTNAME".into(), "X".into()], "h", true);
        assert_eq!(env, [format!("PATH={DEFAULT_PATH}"), "TERM=xterm".into()]);
        // Removed then set again: back, at its first place.
        let env = docker_env(
            &["A=1".into(), "B=1".into(), "A".into(), "A=3".into()],
            "h",
            false,
        );
        assert_eq!(env[2..], ["A=3".to_string(), "B=1".to_string()]);
    }

    #[test]
    fn validation_errors_name_the_problem() {
        let mut spec = SandboxSpec::new(
            Rootfs::Overlay {
                lowerdirs: vec!["/l".into()],
                upperdir: "/u".into(),
            },
            "/s",
            vec!["true".into()],
        );
        spec.validate().unwrap();
        spec.hostname = "bad host".into();
        assert!(spec
            .validate()
            .unwrap_err()
            .to_string()
            .contains("hostname"));
        spec.hostname = "ok".into();
        spec.rootfs = Rootfs::Overlay {
            lowerdirs: vec!["relative".into()],
            upperdir: "/u".into(),
        };
        assert!(spec.validate().unwrap_err().to_string().contains("overlay"));
        spec.rootfs = Rootfs::Dir {
            path: "/r".into(),
            readonly: false,
        };
        spec.process.cwd = "rel".into();
        assert!(spec.validate().unwrap_err().to_string().contains("working"));
        spec.process.cwd = "/".into();
        spec.process.args.clear();
        assert!(spec.validate().unwrap_err().to_string().contains("command"));
    }
}
