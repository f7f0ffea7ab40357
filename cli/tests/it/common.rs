//! Helpers shared by the integration tests.
//!
//! - [`TestStore`]: a private store root in a temp dir, with `lade()` pre-set to `--root` it.
//! - [`run_ok`] / [`run_fail`]: run a command, assert its outcome loudly, return its output.
//! - [`base_rootfs_tar`]: the busybox base rootfs from `testdata/mkrootfs.sh`, as a tarball.
//! - [`docker`] / [`DockerImage`]: the docker CLI (panics with setup instructions when dockerd is
//!   not usable) and a guard that removes a test image on drop; [`docker_base_image`] and
//!   [`docker_build`] make images locally (no registry needed).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Path of the `lade` binary built for this test run.
pub fn lade_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lade"))
}

/// A `Command` for the `lade` binary.
pub fn lade() -> Command {
    Command::new(lade_bin())
}

/// The workspace root (parent of `cli/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli has a parent directory")
        .to_path_buf()
}

/// A name no other test (or test run) uses: `prefix-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temp directory holding a private store (`root/`) and scratch space.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl TestStore {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("create temp dir");
        let root = dir.path().join("root");
        Self { dir, root }
    }

    /// `lade --root ROOT`.
    pub fn lade(&self) -> Command {
        let mut c = lade();
        c.arg("--root").arg(&self.root);
        c
    }

    /// A path in the scratch space.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Every file under the store root with its size and content hash (tmp/ and lock files
    /// excluded): compare two snapshots to prove a command changed nothing.
    pub fn fingerprint(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.root.exists() {
            walk(&self.root, &self.root, &mut out);
        }
        out.sort();
        out
    }

    /// Entries left in `tmp/`.
    pub fn temp_entries(&self) -> usize {
        std::fs::read_dir(self.root.join("tmp"))
            .map(|r| r.count())
            .unwrap_or(0)
    }
}

impl Default for TestStore {
    fn default() -> Self {
        Self::new()
    }
}

fn walk(root: &Path, p: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let path = e.path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel == "tmp" || rel.ends_with("lock") {
            continue;
        }
        let m = std::fs::symlink_metadata(&path).unwrap();
        if m.is_dir() {
            out.push(format!("{rel}/"));
            walk(root, &path, out);
        } else if m.is_file() {
            let data = std::fs::read(&path).unwrap();
            out.push(format!("{rel} {} {:x}", data.len(), crc(&data)));
        } else {
            out.push(format!("{rel} special"));
        }
    }
}

fn crc(d: &[u8]) -> u64 {
    // FNV-1a: enough to notice any change in a test.
    d.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

fn show(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?}\nstatus: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd`, panics with its output unless it succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "command failed: {}", show(cmd, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd`, panics unless it fails; returns stderr.
pub fn run_fail(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        !out.status.success(),
        "command should have failed: {}",
        show(cmd, &out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Panics with an install hint unless `tool` is on PATH.
pub fn require_tool(tool: &str, package: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs `{tool}`: apt-get install {package} (or run .ci/setup)"
    );
}

/// Debian's docker.io CLI. Not plain `docker` from `PATH`: a newer client in `/usr/local/bin`
/// lacks the buildx plugin and refuses `DOCKER_BUILDKIT=1 docker build`, while the 20.10 client
/// that matches the installed dockerd has BuildKit built in.
pub const DOCKER: &str = "/usr/bin/docker";

/// The docker CLI; panics (once per process, loudly) if dockerd is not usable.
pub fn docker() -> Command {
    static OK: OnceLock<Result<(), String>> = OnceLock::new();
    let ok = OK.get_or_init(|| {
        let out = Command::new(DOCKER)
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .map_err(|e| format!("cannot run docker: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    if let Err(e) = ok {
        panic!(
            "this test needs a running dockerd (apt-get install docker.io; \
             dockerd --iptables=false --bridge=none &, or run .ci/setup): {e}"
        );
    }
    Command::new(DOCKER)
}

/// A docker image created by a test; `docker rmi -f` on drop.
pub struct DockerImage {
    pub name: String,
}

impl Drop for DockerImage {
    fn drop(&mut self) {
        let _ = Command::new(DOCKER)
            .args(["rmi", "-f", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Writes the busybox base rootfs (testdata/mkrootfs.sh) as a tarball at `dest`.
pub fn base_rootfs_tar(dest: &Path) {
    run_ok(
        Command::new(workspace_root().join("testdata/mkrootfs.sh"))
            .arg("--tar")
            .arg(dest),
    );
}

/// Writes the base rootfs as a directory at `dest`.
pub fn base_rootfs_dir(dest: &Path) {
    run_ok(Command::new(workspace_root().join("testdata/mkrootfs.sh")).arg(dest));
}

/// `docker import` of the base rootfs as `lade-store-test/base-<unique>:1`.
pub fn docker_base_image(scratch: &Path) -> DockerImage {
    let tar = scratch.join("base-rootfs.tar");
    if !tar.exists() {
        base_rootfs_tar(&tar);
    }
    let name = format!("lade-store-test/{}:1", unique("base"));
    run_ok(docker().arg("import").arg(&tar).arg(&name));
    DockerImage { name }
}

/// Builds `dockerfile` (its `FROM` should name an image made by the test) with no network.
/// Uses BuildKit (`DOCKER_BUILDKIT=1`), the reference Lade is compared against.
pub fn docker_build(scratch: &Path, name: &str, dockerfile: &str) -> DockerImage {
    let ctx = scratch.join(unique("ctx"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let img = DockerImage {
        name: name.to_string(),
    };
    run_ok(
        docker()
            .env("DOCKER_BUILDKIT", "1")
            .args(["build", "-q", "--network=none", "-t", name])
            .arg(&ctx),
    );
    img
}

/// `docker inspect --format FORMAT NAME`, trimmed.
pub fn docker_inspect(name: &str, format: &str) -> String {
    run_ok(docker().args(["inspect", "--format", format, name]))
        .trim()
        .to_string()
}
