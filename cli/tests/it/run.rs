//! `lade run`, `ps`, `rm`, `commit` end to end, on a base image imported from
//! `testdata/mkrootfs.sh --tar` (needs root), compared with `docker run --network=none` on the
//! same image where docker defines the behaviour.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use crate::common::*;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "lade run tests start real sandboxes and need root: run the tests as root"
    );
}

/// The base rootfs tarball: one per version of `testdata/mkrootfs.sh` (it is deterministic),
/// kept in cargo's target tmp dir and shared by test runs; made under a temporary name and
/// renamed into place.
fn base_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let script = std::fs::read(workspace_root().join("testdata/mkrootfs.sh")).unwrap();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&script, &mut h);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let tar = dir.join(format!(
            "lade-run-base-{:016x}.tar",
            std::hash::Hasher::finish(&h)
        ));
        if !tar.exists() {
            let tmp = dir.join(format!("lade-run-base-{}.tmp", std::process::id()));
            base_rootfs_tar(&tmp);
            std::fs::rename(&tmp, &tar).unwrap();
        }
        tar
    })
}

/// Config of the "configured" image, applied identically by `lade import` and `docker import`.
const CONFIGURED: &[&str] = &[
    "ENV A=img B=img PATH=/usr/bin:/bin",
    "WORKDIR /work/dir",
    "USER lade",
    r#"ENTRYPOINT ["/bin/sh", "-c"]"#,
    r#"CMD ["echo default; pwd; id"]"#,
];

/// A private store with `base:1` (the busybox rootfs, `CMD ["/bin/sh"]`).
struct Fx {
    ts: TestStore,
}

impl Fx {
    fn new() -> Self {
        require_root();
        let ts = TestStore::new();
        run_ok(
            ts.lade()
                .args(["import", "-c", r#"CMD ["/bin/sh"]"#])
                .arg(base_tar())
                .arg("base:1"),
        );
        Fx { ts }
    }

    fn lade(&self) -> Command {
        self.ts.lade()
    }

    /// `lade run ARGS` with stdin from /dev/null.
    fn run(&self, args: &[&str]) -> Output {
        self.lade()
            .arg("run")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `lade run ARGS`, which must exit 0; its stdout.
    fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "lade run {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn containers_dir(&self) -> PathBuf {
        self.ts.root.join("containers")
    }

    /// Container directories left in the store (removed ones wait in `.trash/`, which a
    /// detached `lade __purge-trash` or the next `rm`/`prune` empties).
    fn leftovers(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.containers_dir()) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if !n.starts_with('.') {
                    v.push(n);
                }
            }
        }
        v
    }

    /// Entries in the trash.
    fn trash(&self) -> usize {
        std::fs::read_dir(self.containers_dir().join(".trash")).map_or(0, |rd| rd.count())
    }
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn command_is_pid_1_and_the_host_is_invisible() {
    let fx = Fx::new();
    let marker = fx.ts.path("host-marker");
    std::fs::write(&marker, "host").unwrap();
    let script = format!(
        "echo pid=$$; ps -o pid,comm; echo mounts:; cut -d' ' -f2 /proc/mounts; \
         echo net: $(ls /sys/class/net); echo host file: $(cat {} 2>&1)",
        marker.display()
    );
    let out = fx.run_ok(&["--rm", "base:1", "sh", "-c", &script]);
    assert!(out.starts_with("pid=1\n"), "{out}");
    // Only the shell and ps: no host process.
    let procs: Vec<&str> = out
        .lines()
        .skip(2)
        .take_while(|l| *l != "mounts:")
        .map(str::trim)
        .collect();
    assert_eq!(procs, ["1 sh", "2 ps"], "{out}");
    // No host mount: nothing below the test's directories, the workspace or the store.
    let mounts: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != "mounts:")
        .skip(1)
        .take_while(|l| !l.starts_with("net:"))
        .collect();
    assert!(mounts.contains(&"/") && mounts.contains(&"/proc"), "{out}");
    let host_paths = [
        fx.ts.dir.path().to_string_lossy().into_owned(),
        workspace_root().to_string_lossy().into_owned(),
        "/var/lib/docker".to_string(),
    ];
    for m in &mounts {
        for h in &host_paths {
            assert!(!m.starts_with(h.as_str()), "host mount {m} visible: {out}");
        }
    }
    assert!(out.contains("\nnet: lo\n"), "{out}");
    assert!(out.contains("host file: cat: can't open"), "{out}");
    // With --network host the host's interfaces are there.
    let mut host_ifs: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    host_ifs.sort();
    let out = fx.run_ok(&[
        "--rm",
        "--network",
        "host",
        "base:1",
        "ls",
        "/sys/class/net",
    ]);
    let mut seen: Vec<String> = out.split_whitespace().map(String::from).collect();
    seen.sort();
    assert_eq!(seen, host_ifs);
}

#[test]
fn hostname_is_the_container_id_or_the_flag_and_stays_inside() {
    let fx = Fx::new();
    let host_before = nix::unistd::gethostname().unwrap();
    let out = fx.run_ok(&[
        "--name",
        "hn",
        "base:1",
        "sh",
        "-c",
        "hostname; echo $HOSTNAME",
    ]);
    let id = run_ok(fx.lade().args(["ps", "-aq", "--no-trunc"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, [&id.trim()[..12], &id.trim()[..12]]);
    let out = fx.run_ok(&[
        "--rm",
        "-h",
        "inside",
        "base:1",
        "sh",
        "-c",
        "hostname; cat /etc/hostname; hostname changed 2>/dev/null; hostname",
    ]);
    // As with docker, the container cannot change it (no CAP_SYS_ADMIN).
    assert_eq!(out, "inside\ninside\ninside\n");
    assert_eq!(nix::unistd::gethostname().unwrap(), host_before);
}

#[test]
fn exit_codes_and_start_errors_like_docker() {
    let fx = Fx::new();
    let code = |args: &[&str]| fx.run(args).status.code();
    assert_eq!(code(&["--rm", "base:1", "sh", "-c", "exit 42"]), Some(42));
    assert_eq!(code(&["--rm", "base:1", "true"]), Some(0));
    // Killed by a signal: 128 + signal (--init reports how its child died).
    assert_eq!(
        code(&["--rm", "--init", "base:1", "sh", "-c", "kill -KILL $$"]),
        Some(137)
    );
    assert_eq!(code(&["--rm", "base:1", "/nonexistent"]), Some(127));
    assert_eq!(code(&["--rm", "base:1", "nonexistent"]), Some(127));
    assert_eq!(code(&["--rm", "base:1", "/etc"]), Some(126));
    assert_eq!(
        code(&["--rm", "-w", "relative", "base:1", "true"]),
        Some(125)
    );
    assert_eq!(code(&["--rm", "--bogus-flag", "base:1", "true"]), Some(125));
    assert_eq!(
        code(&["--rm", "-u", "nosuchuser", "base:1", "id"]),
        Some(125)
    );
    assert_eq!(code(&["--rm", "--entrypoint", "", "base:1"]), Some(125));
    assert_eq!(
        code(&["--rm", "--pull", "bogus", "base:1", "true"]),
        Some(125)
    );
    // A relative --root is taken from the current directory.
    let out = lade()
        .current_dir(fx.ts.dir.path())
        .args(["--root", "root", "run", "--rm", "base:1", "echo", "rel"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (Some(0), "rel\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (Without --pull never a missing image is pulled: see registry.rs.)
    let out = fx.run(&["--rm", "--pull", "never", "missing/image:1", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unable to find image 'missing/image:1' locally"),
        "{err}"
    );
    // None of these left a container behind.
    assert!(fx.leftovers().is_empty(), "{:?}", fx.leftovers());
}

/// Reads `lade run` stdout lines until `want`.
fn wait_for_line(r: &mut impl BufRead, want: &str) {
    let mut line = String::new();
    loop {
        line.clear();
        let n = r.read_line(&mut line).unwrap();
        assert!(n > 0, "lade run ended before printing {want:?}");
        if line.trim_end() == want {
            return;
        }
    }
}

/// A `lade run` started by a test; killed (with its sandbox) if the test fails first.
struct Running(Child);

impl Running {
    fn wait(&mut self) -> std::process::ExitStatus {
        self.0.wait().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_run(fx: &Fx, args: &[&str]) -> (Running, BufReader<std::process::ChildStdout>) {
    let mut child = fx
        .lade()
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (Running(child), out)
}

fn pidfd_open(pid: i32) -> OwnedFd {
    #[allow(unsafe_code)]
    // SAFETY: pidfd_open returns a new fd that we own.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
        std::os::fd::FromRawFd::from_raw_fd(fd as i32)
    }
}

fn kill(child: &Running, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.0.id() as i32), sig).unwrap();
}

#[test]
fn signals_to_lade_run_reach_the_container() {
    use nix::sys::signal::Signal;
    let fx = Fx::new();
    // The container traps SIGTERM: it sees it, and its exit code comes back.
    let (mut child, mut out) = spawn_run(
        &fx,
        &[
            "--rm",
            "base:1",
            "sh",
            "-c",
            "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 1000 & wait; done",
        ],
    );
    wait_for_line(&mut out, "ready");
    kill(&child, Signal::SIGTERM);
    wait_for_line(&mut out, "got TERM");
    assert_eq!(child.wait().code(), Some(3));
    // SIGUSR1 too, and with --init a command without a handler dies of it: 128 + 10.
    let (mut child, mut out) = spawn_run(
        &fx,
        &[
            "--rm",
            "--init",
            "base:1",
            "sh",
            "-c",
            "echo ready; sleep 1000 & wait",
        ],
    );
    wait_for_line(&mut out, "ready");
    kill(&child, Signal::SIGUSR1);
    assert_eq!(child.wait().code(), Some(138));
    // Killing lade itself takes the sandbox down, and the container reads as dead.
    let (mut child, mut out) = spawn_run(
        &fx,
        &[
            "--name",
            "victim",
            "base:1",
            "sh",
            "-c",
            "echo ready; sleep 1000 & wait",
        ],
    );
    wait_for_line(&mut out, "ready");
    let id = run_ok(fx.lade().args(["ps", "-q", "--no-trunc"]));
    // `lade run` keeps the sandbox's pids in the container's lock file.
    let pids = std::fs::read_to_string(fx.containers_dir().join(id.trim()).join("lock")).unwrap();
    let pid1: i32 = pids.split_whitespace().next().unwrap().parse().unwrap();
    let pidfd = pidfd_open(pid1);
    kill(&child, Signal::SIGKILL);
    child.wait();
    let mut fds = [nix::poll::PollFd::new(
        pidfd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let n = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16)).unwrap();
    assert_eq!(n, 1, "the container outlived its lade process");
    let ps = run_ok(fx.lade().args(["ps", "-a", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(ps.trim()).unwrap();
    assert_eq!(v["State"], "dead", "{ps}");
    assert_eq!(v["Status"], "Dead", "{ps}");
    run_ok(fx.lade().args(["rm", "victim"]));
}

#[test]
fn changes_vanish_with_rm_and_stay_without() {
    let fx = Fx::new();
    fx.run_ok(&["--rm", "base:1", "sh", "-c", "echo x > /f; rm /etc/passwd"]);
    let out = fx.run(&["--rm", "base:1", "sh", "-c", "cat /f; head -1 /etc/passwd"]);
    assert_eq!(stdout_of(&out), "root:x:0:0:root:/root:/bin/sh\n");
    assert!(fx.leftovers().is_empty(), "{:?}", fx.leftovers());
    assert_eq!(run_ok(fx.lade().args(["ps", "-aq"])), "");
    // What a --rm container wrote is deleted in the background, or by prune at the latest.
    run_ok(fx.lade().arg("prune"));
    assert_eq!(fx.trash(), 0);

    fx.run_ok(&["--name", "keep", "base:1", "sh", "-c", "echo kept > /f"]);
    let ps = run_ok(fx.lade().args(["ps", "-a"]));
    let lines: Vec<&str> = ps.lines().collect();
    assert_eq!(lines.len(), 2, "{ps}");
    for col in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "NAMES",
    ] {
        assert!(lines[0].contains(col), "{ps}");
    }
    assert!(lines[1].contains("base:1"), "{ps}");
    assert!(lines[1].contains("\"sh -c 'echo kept > …\""), "{ps}");
    assert!(lines[1].contains("Exited (0) "), "{ps}");
    assert!(lines[1].ends_with("keep"), "{ps}");
    // Not running: plain `ps` lists nothing but the header.
    assert_eq!(run_ok(fx.lade().arg("ps")).lines().count(), 1);
    // Names are unique.
    let err =
        String::from_utf8_lossy(&fx.run(&["--name", "keep", "base:1", "true"]).stderr).into_owned();
    assert!(err.contains("already in use"), "{err}");

    let id = run_ok(
        fx.lade()
            .args(["commit", "-m", "kept it", "keep", "kept:1"]),
    );
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(fx.run_ok(&["--rm", "kept:1", "cat", "/f"]), "kept\n");
    // Committing again (the upperdir is a layer snapshot now) gives the same filesystem.
    run_ok(fx.lade().args(["commit", "keep", "kept:2"]));
    assert_eq!(fx.run_ok(&["--rm", "kept:2", "cat", "/f"]), "kept\n");
    let hist = run_ok(fx.lade().args(["history", "--format", "json", "kept:1"]));
    let top: serde_json::Value = serde_json::from_str(hist.lines().next().unwrap()).unwrap();
    assert_eq!(top["CreatedBy"], "sh -c echo kept > /f");
    assert_eq!(top["Comment"], "kept it");
    // docker commit keeps the container's command as the image's CMD.
    let inspect = run_ok(fx.lade().args(["inspect", "kept:1"]));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(
        v[0]["Config"]["Cmd"],
        serde_json::json!(["sh", "-c", "echo kept > /f"])
    );
    assert_eq!(v[0]["RootFS"]["Layers"].as_array().unwrap().len(), 2);

    assert_eq!(run_ok(fx.lade().args(["rm", "keep"])), "keep\n");
    assert_eq!(run_ok(fx.lade().args(["ps", "-aq"])), "");
    assert!(fx.leftovers().is_empty(), "{:?}", fx.leftovers());
    // The committed images do not need the container.
    assert_eq!(fx.run_ok(&["--rm", "kept:1", "cat", "/f"]), "kept\n");
    let err = run_fail(fx.lade().args(["rm", "keep"]));
    assert!(err.contains("no such container"), "{err}");
}

#[test]
fn commit_applies_changes_and_tags() {
    let fx = Fx::new();
    fx.run_ok(&[
        "--name",
        "c",
        "-e",
        "RUNENV=1",
        "-w",
        "/srv",
        "base:1",
        "sh",
        "-c",
        "echo hi > /srv/x",
    ]);
    run_ok(fx.lade().args([
        "commit",
        "-c",
        "CMD [\"cat\", \"x\"]",
        "-c",
        "ENV ADDED=yes",
        "-a",
        "me",
        "c",
        "changed:1",
    ]));
    assert_eq!(fx.run_ok(&["--rm", "changed:1"]), "hi\n");
    let env = fx.run_ok(&["--rm", "changed:1", "env"]);
    assert!(
        env.contains("RUNENV=1\n") && env.contains("ADDED=yes\n"),
        "{env}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&run_ok(fx.lade().args(["inspect", "changed:1"]))).unwrap();
    assert_eq!(v[0]["Author"], "me");
    assert_eq!(v[0]["Config"]["WorkingDir"], "/srv");
    // Without a name: an unnamed image.
    let id = run_ok(fx.lade().args(["commit", "c"]));
    assert!(run_ok(fx.lade().args(["images", "-q"])).contains(&id.trim()[7..19]));
    let err = run_fail(fx.lade().args(["commit", "nope", "x:1"]));
    assert!(err.contains("no such container"), "{err}");
}

#[test]
fn running_containers_in_ps_rm_and_rm_force() {
    let fx = Fx::new();
    let (mut child, mut out) = spawn_run(
        &fx,
        &[
            "--name",
            "live",
            "base:1",
            "sh",
            "-c",
            "echo ready; sleep 1000 & wait",
        ],
    );
    wait_for_line(&mut out, "ready");
    let ps = run_ok(fx.lade().arg("ps"));
    assert!(
        ps.lines()
            .nth(1)
            .is_some_and(|l| l.contains(" Up ") && l.ends_with("live")),
        "{ps}"
    );
    let q = run_ok(fx.lade().args(["ps", "-q"]));
    assert_eq!(q.trim().len(), 12);
    let json = run_ok(fx.lade().args(["ps", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["State"], "running");
    assert_eq!(v["Names"], "live");
    assert!(v["Status"].as_str().unwrap().starts_with("Up "));
    let err = run_fail(fx.lade().args(["rm", "live"]));
    assert!(err.contains("is running"), "{err}");
    let err = run_fail(fx.lade().args(["commit", "live", "x:1"]));
    assert!(err.contains("is running"), "{err}");
    assert_eq!(run_ok(fx.lade().args(["rm", "-f", "live"])), "live\n");
    assert_eq!(child.wait().code(), Some(137));
    assert_eq!(run_ok(fx.lade().args(["ps", "-aq"])), "");
    assert!(fx.leftovers().is_empty(), "{:?}", fx.leftovers());
}

#[test]
fn containers_are_gc_roots_and_rmi_behaves_like_docker() {
    let fx = Fx::new();
    fx.run_ok(&["--name", "user", "base:1", "true"]);
    let base_id = run_ok(fx.lade().args(["images", "-q", "--no-trunc", "base"]))
        .trim()
        .to_string();
    let err = run_fail(fx.lade().args(["rmi", "base:1"]));
    assert!(
        err.contains("unable to remove repository reference \"base:1\" (must force)"),
        "{err}"
    );
    let err = run_fail(fx.lade().args(["rmi", &base_id]));
    assert!(err.contains("being used by stopped container"), "{err}");
    // Another name can go: the image keeps one.
    run_ok(fx.lade().args(["tag", "base:1", "other:1"]));
    run_ok(fx.lade().args(["rmi", "other:1"]));
    // Forced: the name goes, the image stays (as <none>) for the container.
    let out = fx.lade().args(["rmi", "-f", "base:1"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kept image"));
    run_ok(fx.lade().arg("prune"));
    let snaps = std::fs::read_dir(fx.ts.root.join("snapshots"))
        .unwrap()
        .count();
    assert_eq!(snaps, 1, "prune removed the container's snapshot");
    // The container can still be committed and its image run.
    run_ok(fx.lade().args(["commit", "user", "again:1"]));
    assert_eq!(fx.run_ok(&["--rm", "again:1", "echo", "ok"]), "ok\n");
    run_ok(fx.lade().args(["rm", "user"]));
    run_ok(fx.lade().args(["rmi", "again:1"]));
    run_ok(fx.lade().args(["rmi", &base_id]));
    run_ok(fx.lade().arg("prune"));
    assert_eq!(
        std::fs::read_dir(fx.ts.root.join("snapshots"))
            .unwrap()
            .count(),
        0
    );
    run_ok(fx.lade().args(["system", "check"]));
}

/// Every path of the root filesystem (mounts and docker's additions left out) with type,
/// mode, owner, and size + checksum for files, target for symlinks: the full view.
const LISTING: &str = "find / -xdev \\( -path /proc -o -path /sys -o -path /dev \
    -o -path /etc/hosts -o -path /etc/hostname -o -path /etc/resolv.conf -o -path /etc/mtab \
    -o -path /.dockerenv \\) -prune -o -print | sort | while read -r f; do \
    if [ -L \"$f\" ]; then echo \"$f link $(readlink \"$f\")\"; \
    elif [ -f \"$f\" ]; then echo \"$f $(stat -c '%F %a %u:%g %s' \"$f\") $(md5sum < \"$f\" | cut -c1-32)\"; \
    else echo \"$f $(stat -c '%F %a %u:%g' \"$f\")\"; fi; done";

#[test]
fn whiteouts_round_trip_through_commit() {
    let fx = Fx::new();
    // A base with what the container will delete and replace.
    fx.run_ok(&[
        "--name",
        "prep",
        "base:1",
        "sh",
        "-c",
        "mkdir -p /data /dir1/b /dir2/sub /dir3/keep /dir3/gone && echo keep > /data/keep && \
         echo del > /data/del && echo a > /dir1/a && echo c > /dir1/b/c && echo x > /dir2/x && \
         echo y > /dir2/sub/y && echo k > /dir3/keep/k && echo g > /dir3/gone/g && \
         ln -s /data/keep /data/link && chmod 640 /data/keep",
    ]);
    run_ok(fx.lade().args(["commit", "prep", "wbase:1"]));
    // Delete a file, replace a directory with a file, replace a directory with a fresh one
    // (opaque), remove a subdirectory, change modes, add things; print the view.
    let script = format!(
        "rm /data/del && rm -rf /dir1 && echo now-a-file > /dir1 && \
         rm -rf /dir2 && mkdir /dir2 && echo fresh > /dir2/new && rm -rf /dir3/gone && \
         chmod 600 /data/keep && rm /data/link && ln -s /dir1 /data/link && \
         mkdir -p /new/deep && echo n > /new/deep/n && rm /bin/ls && {LISTING}"
    );
    let inside = fx.run_ok(&["--name", "c", "wbase:1", "sh", "-c", &script]);
    for want in [
        "/dir1 regular file 644 0:0 11",
        "/dir2 directory 755 0:0",
        "/dir2/new regular file",
        "/data/keep regular file 600",
        "/data/link link /dir1",
    ] {
        assert!(inside.contains(want), "missing {want:?} in\n{inside}");
    }
    for gone in [
        "/data/del",
        "/dir2/x",
        "/dir2/sub",
        "/dir3/gone",
        "/dir1/a",
        "/bin/ls ",
    ] {
        assert!(!inside.contains(gone), "{gone} still there:\n{inside}");
    }
    run_ok(fx.lade().args(["commit", "c", "wout:1"]));
    // The committed layer is the renamed upperdir: run on it.
    let snapshot_view = fx.run_ok(&["--rm", "wout:1", "sh", "-c", LISTING]);
    assert_eq!(
        snapshot_view, inside,
        "view from the committed snapshot differs"
    );
    // The layer tar unpacked from scratch: save, load into a fresh store, run there.
    let archive = fx.ts.path("wout.tar");
    run_ok(fx.lade().args(["save", "-o"]).arg(&archive).arg("wout:1"));
    let fresh = TestStore::new();
    run_ok(fresh.lade().args(["load", "-i"]).arg(&archive));
    let out = fresh
        .lade()
        .args(["run", "--rm", "wout:1", "sh", "-c", LISTING])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout_of(&out),
        inside,
        "view from the unpacked layer tars differs"
    );
    // And docker's view of the same archive.
    let name = format!("lade-run-test/{}:1", unique("wout"));
    run_ok(fx.lade().args(["tag", "wout:1", &name]));
    let archive2 = fx.ts.path("wout2.tar");
    run_ok(fx.lade().args(["save", "-o"]).arg(&archive2).arg(&name));
    let _img2 = DockerImage { name: name.clone() };
    run_ok(docker().args(["load", "-i"]).arg(&archive2));
    let dock = run_ok(docker().args(["run", "--rm", "--network=none", &name, "sh", "-c", LISTING]));
    assert_eq!(dock, inside, "docker's view of the committed image differs");
}

/// docker's and lade's `run` on the same imported image, for one set of flags.
struct Case {
    flags: &'static [&'static str],
    image: &'static str,
    cmd: &'static [&'static str],
    stdin: Option<&'static str>,
}

fn run_with(mut cmd: Command, stdin: Option<&str>) -> (String, Option<i32>) {
    cmd.env("HOSTV", "from-host").env_remove("NOPE");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut w = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        w.write_all(s.as_bytes()).unwrap();
    }
    drop(w);
    let out = child.wait_with_output().unwrap();
    (stdout_of(&out), out.status.code())
}

#[test]
fn flags_behave_like_docker_run() {
    let fx = Fx::new();
    let mut import = fx.lade();
    import.arg("import");
    let mut dimport = docker();
    dimport.arg("import");
    for c in CONFIGURED {
        import.args(["-c", c]);
        dimport.args(["-c", c]);
    }
    run_ok(import.arg(base_tar()).arg("configured:1"));
    let dbase = format!("lade-run-test/{}:1", unique("base"));
    let dconf = format!("lade-run-test/{}:1", unique("configured"));
    run_ok(
        docker()
            .args(["import", "-c", r#"CMD ["/bin/sh"]"#])
            .arg(base_tar())
            .arg(&dbase),
    );
    let _g1 = DockerImage {
        name: dbase.clone(),
    };
    run_ok(dimport.arg(base_tar()).arg(&dconf));
    let _g2 = DockerImage {
        name: dconf.clone(),
    };

    let vol = fx.ts.path("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("f"), "host file\n").unwrap();
    let envfile = fx.ts.path("env.list");
    std::fs::write(
        &envfile,
        "# comment\nFILE1=one\n  FILE2 = spaced \nHOSTV\nNOPE\nB=file\n",
    )
    .unwrap();
    let envfile_bad = fx.ts.path("bad.list");
    std::fs::write(&envfile_bad, "Y =1\n").unwrap();
    let (vol_rw, vol_ro) = (
        Box::leak(format!("{}:/vol", vol.display()).into_boxed_str()) as &str,
        Box::leak(format!("{}:/vol:ro", vol.display()).into_boxed_str()) as &str,
    );
    let (ef, efb) = (
        Box::leak(envfile.display().to_string().into_boxed_str()) as &str,
        Box::leak(envfile_bad.display().to_string().into_boxed_str()) as &str,
    );
    const IDENTITY: &str = "env | sort; pwd; id; umask";
    let cases = [
        Case {
            flags: &["-h", "sbx"],
            image: "base",
            cmd: &["sh", "-c", IDENTITY],
            stdin: None,
        },
        Case {
            flags: &["-h", "sbx"],
            image: "configured",
            cmd: &[IDENTITY],
            stdin: None,
        },
        Case {
            flags: &["-h", "sbx"],
            image: "configured",
            cmd: &[],
            stdin: None,
        },
        Case {
            flags: &["-h", "sbx", "--entrypoint", ""],
            image: "configured",
            cmd: &["sh", "-c", IDENTITY],
            stdin: None,
        },
        Case {
            flags: &["--entrypoint", "echo"],
            image: "configured",
            cmd: &["a", "b"],
            stdin: None,
        },
        Case {
            flags: &["--entrypoint", "echo"],
            image: "configured",
            cmd: &[],
            stdin: None,
        },
        Case {
            flags: &["--entrypoint", ""],
            image: "configured",
            cmd: &[],
            stdin: None,
        },
        Case {
            flags: &[
                "-h", "sbx", "-e", "B=user", "-e", "A", "-e", "HOSTV", "-e", "NOPE", "-e", "PATH",
            ],
            image: "configured",
            cmd: &["env | sort"],
            stdin: None,
        },
        Case {
            flags: &["-h", "sbx", "--env-file", "ENVFILE", "-e", "FILE1=override"],
            image: "base",
            cmd: &["sh", "-c", "env | sort"],
            stdin: None,
        },
        Case {
            flags: &["--env-file", "BADENVFILE"],
            image: "base",
            cmd: &["true"],
            stdin: None,
        },
        Case {
            flags: &["-w", "/does/not/exist", "-u", "lade"],
            image: "base",
            cmd: &["sh", "-c", "pwd; id; stat -c '%A %U %G %n' ."],
            stdin: None,
        },
        Case {
            flags: &["-w", "relative"],
            image: "base",
            cmd: &["pwd"],
            stdin: None,
        },
        Case {
            flags: &["-u", "1000:audio", "--group-add", "wheel"],
            image: "base",
            cmd: &["id"],
            stdin: None,
        },
        Case {
            flags: &["-u", "4242:4242"],
            image: "configured",
            cmd: &["id; echo $HOME"],
            stdin: None,
        },
        Case {
            flags: &["-u", "nosuchuser"],
            image: "base",
            cmd: &["id"],
            stdin: None,
        },
        Case {
            flags: &["-v", "VOLRW"],
            image: "base",
            cmd: &[
                "sh",
                "-c",
                "cat /vol/f; echo w > /vol/w && cat /vol/w; rm /vol/w",
            ],
            stdin: None,
        },
        Case {
            flags: &["-v", "VOLRO"],
            image: "base",
            cmd: &[
                "sh",
                "-c",
                "cat /vol/f; touch /vol/x 2>&1 | sed 's/^touch: //'",
            ],
            stdin: None,
        },
        Case {
            flags: &["-i"],
            image: "base",
            cmd: &["sh", "-c", "wc -l; cat"],
            stdin: Some("one\ntwo\n"),
        },
        Case {
            flags: &[],
            image: "base",
            cmd: &["sh", "-c", "wc -c"],
            stdin: Some("not passed without -i\n"),
        },
        Case {
            flags: &["-t"],
            image: "base",
            cmd: &["sh", "-c", "tty; echo $TERM; test -t 0 && echo stdin-tty"],
            stdin: None,
        },
        Case {
            flags: &[],
            image: "base",
            cmd: &["sh", "-c", "echo out; echo err >&2; exit 42"],
            stdin: None,
        },
        Case {
            flags: &[],
            image: "base",
            cmd: &["nonexistent"],
            stdin: None,
        },
        Case {
            flags: &[],
            image: "base",
            cmd: &["/etc"],
            stdin: None,
        },
    ];
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let subst = |f: &&str| -> String {
            match *f {
                "VOLRW" => vol_rw.to_string(),
                "VOLRO" => vol_ro.to_string(),
                "ENVFILE" => ef.to_string(),
                "BADENVFILE" => efb.to_string(),
                other => other.to_string(),
            }
        };
        let flags: Vec<String> = case.flags.iter().map(subst).collect();
        let (limg, dimg) = match case.image {
            "base" => ("base:1", dbase.as_str()),
            _ => ("configured:1", dconf.as_str()),
        };
        let mut d = docker();
        d.args(["run", "--rm", "--network=none"])
            .args(&flags)
            .arg(dimg)
            .args(case.cmd);
        let mut l = fx.lade();
        l.args(["run", "--rm"])
            .args(&flags)
            .arg(limg)
            .args(case.cmd);
        let want = run_with(d, case.stdin);
        let got = run_with(l, case.stdin);
        if want != got {
            failures.push(format!(
                "case {i} {:?} {} {:?}:\n--- docker (exit {:?})\n{}--- lade (exit {:?})\n{}",
                case.flags, case.image, case.cmd, want.1, want.0, got.1, got.0
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(fx.leftovers().is_empty(), "{:?}", fx.leftovers());
}

/// Reads the pty master until the slave side is gone (EIO) or `until` appears.
fn read_pty(master: &OwnedFd, acc: &mut String, until: Option<&str>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut buf = [0u8; 4096];
    // A guard against a hang, not a synchronisation: the test holds the slave open, so a
    // missing line would otherwise block the read forever.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if until.is_some_and(|u| acc.contains(u)) {
            return;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            !left.is_zero(),
            "waited 120 s for {until:?}; the pty gave {acc:?}"
        );
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => panic!("poll pty: {e}"),
        }
        match nix::unistd::read(master, &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EIO) => return,
            Ok(n) => acc.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => panic!("read pty: {e}"),
        }
    }
}

/// `stty rows N`: one TIOCSWINSZ, so one SIGWINCH.
fn set_rows(fd: &impl AsFd, rows: u16) {
    let st = Command::new("stty")
        .args(["rows", &rows.to_string()])
        .stdin(Stdio::from(nix::unistd::dup(fd.as_fd()).unwrap()))
        .status()
        .unwrap();
    assert!(st.success());
}

fn set_winsize(fd: &impl AsFd, rows: u16, cols: u16) {
    // `stty` (coreutils) on the slave, instead of an ioctl (no unsafe in tests); it makes one
    // TIOCSWINSZ per dimension.
    let st = Command::new("stty")
        .args(["rows", &rows.to_string(), "cols", &cols.to_string()])
        .stdin(Stdio::from(nix::unistd::dup(fd.as_fd()).unwrap()))
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn tty_is_relayed_resized_and_the_terminal_restored() {
    use nix::sys::termios::{tcgetattr, LocalFlags};
    let fx = Fx::new();
    require_tool("setsid", "util-linux");
    let pty = nix::pty::openpty(None, None).unwrap();
    set_winsize(&pty.slave, 33, 77);
    let before = tcgetattr(&pty.slave).unwrap();
    assert!(before
        .local_flags
        .contains(LocalFlags::ICANON | LocalFlags::ECHO));
    let slave = |_: ()| Stdio::from(nix::unistd::dup(pty.slave.as_fd()).unwrap());
    // lade in its own session with the pty as controlling terminal, as in a shell.
    let mut child = Running(
        Command::new("setsid")
            .args(["--ctty", "--wait"])
            .arg(lade_bin())
            .arg("--root")
            .arg(&fx.ts.root)
            .args([
                "run",
                "--rm",
                "-it",
                "base:1",
                "sh",
                "-c",
                "trap 'stty size; exit 7' WINCH; tty; stty size; echo TERM=$TERM; \
             read line; echo got:$line; sleep 1000 & wait",
            ])
            .stdin(slave(()))
            .stdout(slave(()))
            .stderr(slave(()))
            .spawn()
            .unwrap(),
    );
    let mut acc = String::new();
    read_pty(&pty.master, &mut acc, Some("TERM=xterm\r\n"));
    assert!(acc.contains("/dev/pts/0\r\n33 77\r\n"), "{acc:?}");
    // Raw mode on the host side while it runs: our input reaches the container unechoed by
    // the host terminal (the container's own pty echoes it once).
    let during = tcgetattr(&pty.slave).unwrap();
    assert!(
        !during.local_flags.contains(LocalFlags::ICANON),
        "not in raw mode"
    );
    nix::unistd::write(&pty.master, b"hello\r").unwrap();
    read_pty(&pty.master, &mut acc, Some("got:hello\r\n"));
    assert_eq!(acc.matches("hello").count(), 2, "{acc:?}");
    // A window size change reaches the container (SIGWINCH there). Rows only: `stty rows R
    // cols C` makes one TIOCSWINSZ per dimension, and the container may see (and exit on) the
    // first before the second is made.
    set_rows(&pty.slave, 50);
    read_pty(&pty.master, &mut acc, Some("50 77\r\n"));
    assert_eq!(child.wait().code(), Some(7));
    let after = tcgetattr(&pty.slave).unwrap();
    assert_eq!(
        after.local_flags, before.local_flags,
        "terminal not restored"
    );
    assert_eq!(after.input_flags, before.input_flags);
    assert_eq!(after.output_flags, before.output_flags);
}

#[test]
fn commit_config_matches_docker_commit() {
    let fx = Fx::new();
    let mut import = fx.lade();
    import.arg("import");
    let mut dimport = docker();
    dimport.arg("import");
    for c in CONFIGURED {
        import.args(["-c", c]);
        dimport.args(["-c", c]);
    }
    run_ok(import.arg(base_tar()).arg("configured:1"));
    let dconf = format!("lade-run-test/{}:1", unique("configured"));
    run_ok(dimport.arg(base_tar()).arg(&dconf));
    let _g = DockerImage {
        name: dconf.clone(),
    };
    let dname = unique("lade-run-test-commit");
    let flags = ["-e", "X=1", "-w", "/srv", "-u", "lade"];
    let cmd = "echo hi > /tmp/f";
    run_ok(
        docker()
            .args(["run", "--network=none", "--name", &dname])
            .args(flags)
            .arg(&dconf)
            .arg(cmd),
    );
    let dcommitted = format!("{dconf}-committed");
    run_ok(docker().args(["commit", "-c", "ENV Y=2", "-m", "msg", &dname, &dcommitted]));
    let _g2 = DockerImage {
        name: dcommitted.clone(),
    };
    let _ = docker().args(["rm", "-f", &dname]).output();
    fx.run_ok(&[&["--name", "c"][..], &flags[..], &["configured:1", cmd][..]].concat());
    run_ok(
        fx.lade()
            .args(["commit", "-c", "ENV Y=2", "-m", "msg", "c", "committed:1"]),
    );

    let dv: serde_json::Value =
        serde_json::from_str(&run_ok(docker().args(["inspect", &dcommitted]))).unwrap();
    let lv: serde_json::Value =
        serde_json::from_str(&run_ok(fx.lade().args(["inspect", "committed:1"]))).unwrap();
    for key in ["Cmd", "Entrypoint", "Env", "WorkingDir", "User"] {
        assert_eq!(
            lv[0]["Config"][key], dv[0]["Config"][key],
            "Config.{key}: lade {} docker {}",
            lv[0]["Config"], dv[0]["Config"]
        );
    }
    assert_eq!(lv[0]["Comment"], dv[0]["Comment"]);
    let top = |h: String| -> serde_json::Value {
        serde_json::from_str(h.lines().next().unwrap()).unwrap()
    };
    let dh = top(run_ok(docker().args([
        "history",
        "--no-trunc",
        "--format",
        "{{json .}}",
        &dcommitted,
    ])));
    let lh = top(run_ok(fx.lade().args([
        "history",
        "--no-trunc",
        "--format",
        "json",
        "committed:1",
    ])));
    assert_eq!(lh["CreatedBy"], dh["CreatedBy"]);
    assert_eq!(lh["Comment"], dh["Comment"]);
    // The file is in both.
    assert_eq!(fx.run_ok(&["--rm", "committed:1", "cat /tmp/f"]), "hi\n");
}

/// The entry names of the last layer of a `lade save` archive's first image.
fn last_layer_entries(archive: &Path) -> Vec<String> {
    use std::io::Read;
    let mut files = std::collections::HashMap::new();
    let mut a = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        if e.header().entry_type().is_file() {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            files.insert(name.trim_start_matches("./").to_string(), data);
        }
    }
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let layer = manifest[0]["Layers"].as_array().unwrap().last().unwrap();
    let (_, reader) = lade_cache::tarfmt::decompress(std::io::BufReader::new(
        std::io::Cursor::new(files[layer.as_str().unwrap()].clone()),
    ))
    .unwrap();
    tar::Archive::new(reader)
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}

/// `lade` as nobody (uid and gid 65534, no groups, no capabilities) with `home` as its home
/// and its store in the XDG default (`home/data/lade`): the rootless case.
fn lade_as_nobody(home: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(lade_bin())
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("LADE_ROOT")
        .stdin(Stdio::null());
    c
}

/// Runs `cmd` (as nobody), which must succeed; its stdout.
fn nobody_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .expect("setpriv (util-linux) is needed to run lade as an unprivileged user");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn rootless_run_sees_opaque_dirs_and_whiteouts_and_commit_keeps_them() {
    let fx = Fx::new();
    // Unprivileged user namespaces must work here (no sysctl or AppArmor restriction).
    let probe = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["unshare", "--user", "--map-root-user", "true"])
        .output()
        .expect("setpriv and unshare (util-linux) are needed");
    assert!(
        probe.status.success(),
        "unprivileged user namespaces are disabled on this host (kernel.unprivileged_userns_clone \
         or AppArmor's restrict_unprivileged_userns): {}",
        String::from_utf8_lossy(&probe.stderr)
    );

    // As root: an image whose top layer has a whiteout (/data/del, /bin/ls), an opaque
    // directory (/dir2 replaced) and a read-only directory with content (/ro, 0555).
    fx.run_ok(&[
        "--name",
        "prep",
        "base:1",
        "sh",
        "-c",
        "mkdir -p /data /dir2/sub /ro/sub && echo keep > /data/keep && echo del > /data/del && \
         echo x > /dir2/x && echo y > /dir2/sub/y && echo r > /ro/sub/r && \
         chmod 555 /ro/sub /ro",
    ]);
    run_ok(fx.lade().args(["commit", "prep", "rlbase:1"]));
    fx.run_ok(&[
        "--name",
        "change",
        "rlbase:1",
        "sh",
        "-c",
        "rm /data/del /bin/ls && rm -rf /dir2 && mkdir /dir2 && echo fresh > /dir2/new",
    ]);
    run_ok(fx.lade().args(["commit", "change", "rlimg:1"]));
    let root_view = fx.run_ok(&["--rm", "rlimg:1", "sh", "-c", LISTING]);
    assert!(root_view.contains("/dir2/new regular file"), "{root_view}");
    assert!(
        root_view.contains("/ro/sub directory 555 0:0"),
        "{root_view}"
    );
    for gone in ["/data/del", "/dir2/x", "/dir2/sub", "/bin/ls "] {
        assert!(
            !root_view.contains(gone),
            "{gone} in root's view:\n{root_view}"
        );
    }
    // Rootless, every file of the image belongs to uid 0 inside (the store unpacks them as
    // the caller, whom the user namespace maps to root): the one difference with root's view.
    let as_rootless = |view: &str| {
        view.replace(
            "/home/lade directory 755 1000:1000",
            "/home/lade directory 755 0:0",
        )
    };

    // nobody's home, reachable through the temp dir.
    let t = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let home = t.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let archive = t.path().join("rlimg.tar");
    run_ok(fx.lade().args(["save", "-o"]).arg(&archive).arg("rlimg:1"));
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    // nobody loads it into its own store and runs it: the snapshots carry user.overlay.opaque
    // (what a userxattr overlay reads, and all nobody may write), /ro is filled before it is
    // made read-only.
    nobody_ok(lade_as_nobody(&home).args(["load", "-i"]).arg(&archive));
    let store = home.join("data/lade");
    assert!(
        store.join("refs.json").is_file(),
        "the store is not in $XDG_DATA_HOME/lade"
    );
    let rootless_view =
        nobody_ok(lade_as_nobody(&home).args(["run", "--rm", "rlimg:1", "sh", "-c", LISTING]));
    assert_eq!(
        rootless_view,
        as_rootless(&root_view),
        "rootless view differs from root's"
    );

    // A rootless container replaces a directory (opaque in its upperdir, as user.overlay.opaque)
    // and deletes a file; commit keeps both in the layer.
    let script = format!(
        "rm -rf /ro/sub /data && mkdir /data && echo new > /data/n && rm /dir2/new && {LISTING}"
    );
    let inside = nobody_ok(
        lade_as_nobody(&home).args(["run", "--name", "rc", "rlimg:1", "sh", "-c", &script]),
    );
    assert!(inside.contains("/data/n regular file"), "{inside}");
    for gone in ["/data/keep", "/dir2/new", "/ro/sub"] {
        assert!(!inside.contains(gone), "{gone} still there:\n{inside}");
    }
    nobody_ok(lade_as_nobody(&home).args(["commit", "rc", "rlout:1"]));
    let snapshot_view =
        nobody_ok(lade_as_nobody(&home).args(["run", "--rm", "rlout:1", "sh", "-c", LISTING]));
    assert_eq!(
        snapshot_view, inside,
        "view from the committed snapshot differs"
    );
    let out_archive = home.join("rlout.tar");
    nobody_ok(
        lade_as_nobody(&home)
            .args(["save", "-o"])
            .arg(&out_archive)
            .arg("rlout:1"),
    );
    let entries = last_layer_entries(&out_archive);
    for want in ["data/.wh..wh..opq", "dir2/.wh.new", "ro/.wh.sub"] {
        assert!(
            entries.iter().any(|e| e == want),
            "no {want} in the layer: {entries:?}"
        );
    }
    assert!(
        !entries.iter().any(|e| e.starts_with("data/keep")),
        "{entries:?}"
    );
    // The layer unpacked by root in a fresh store gives the container's view too.
    let fresh = TestStore::new();
    run_ok(fresh.lade().args(["load", "-i"]).arg(&out_archive));
    let out = fresh
        .lade()
        .args(["run", "--rm", "rlout:1", "sh", "-c", LISTING])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        as_rootless(&stdout_of(&out)),
        inside,
        "root's view of the rootless layer differs"
    );

    // What a single-id user namespace cannot do is a clear error, not a silent difference.
    let out = lade_as_nobody(&home)
        .args(["run", "--rm", "-u", "1000", "rlimg:1", "id"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("uid 1000") && err.contains("maps only uid and gid 0"),
        "{err}"
    );
    let out = lade_as_nobody(&home)
        .args(["run", "--rm", "--group-add", "wheel", "rlimg:1", "id"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("cannot add groups wheel in a rootless sandbox"),
        "{err}"
    );

    // nobody can remove what it made (read-only directories included).
    nobody_ok(lade_as_nobody(&home).args(["rm", "rc"]));
    nobody_ok(lade_as_nobody(&home).args(["rmi", "rlout:1", "rlimg:1"]));
    nobody_ok(lade_as_nobody(&home).arg("prune"));
    assert_eq!(
        std::fs::read_dir(store.join("snapshots")).unwrap().count(),
        0
    );
    assert!(nobody_ok(lade_as_nobody(&home).args(["system", "check"])).contains("consistent"));
}
