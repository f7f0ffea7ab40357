//! Differential test: the same commands in the lade sandbox and in `docker run --network=none`
//! on the same busybox rootfs (imported with `docker import`) must print the same thing.
//! Needs root and a running dockerd.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use lade_runtime::{
    docker_env, BindMount, EtcFiles, NetworkMode, Rootfs, Runtime, SandboxSpec, Stdio, StdioSet,
};

struct Image {
    tag: String,
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

fn import(rootfs: &Path, tar: &Path) -> Image {
    let st = Command::new("tar")
        .args(["--sort=name", "--numeric-owner", "-C"])
        .arg(rootfs)
        .arg("-cf")
        .arg(tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let tag = format!("lade-runtime-test/busybox:{}", std::process::id());
    let out = Command::new("docker")
        .args(["import"])
        .arg(tar)
        .arg(&tag)
        .output()
        .expect("docker CLI not found: apt-get install docker.io and start dockerd (.ci/setup)");
    assert!(
        out.status.success(),
        "docker import failed (is dockerd running? .ci/setup starts it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Image { tag }
}

struct Case {
    user: &'static str,
    workdir: &'static str,
    env: &'static [&'static str],
    group_add: &'static [&'static str],
    volume_ro: bool,
    stdin: Option<&'static str>,
    script: &'static str,
}

const BASE: Case = Case {
    user: "",
    workdir: "",
    env: &[],
    group_add: &[],
    volume_ro: false,
    stdin: None,
    script: "",
};

const IDENTITY: &str = "id; pwd; echo HOME=$HOME; umask; env | grep -v ^PWD= | sort; \
    grep -E '^(Groups|Cap|NoNewPrivs|Seccomp:)' /proc/self/status | grep -v Seccomp";

fn docker(image: &str, case: &Case, vol: &Path) -> (String, i32) {
    let mut cmd = Command::new("docker");
    cmd.args(["run", "--rm", "--network=none", "--hostname", "sbx"]);
    if case.stdin.is_some() {
        cmd.arg("-i");
    }
    if !case.user.is_empty() {
        cmd.args(["-u", case.user]);
    }
    if !case.workdir.is_empty() {
        cmd.args(["-w", case.workdir]);
    }
    for e in case.env {
        cmd.args(["-e", e]);
    }
    for g in case.group_add {
        cmd.args(["--group-add", g]);
    }
    let mode = if case.volume_ro { ":ro" } else { "" };
    cmd.args(["-v", &format!("{}:/vol{mode}", vol.display())]);
    cmd.args([image, "sh", "-c", case.script]);
    cmd.stdin(std::process::Stdio::piped());
    cmd.stdout(std::process::Stdio::piped());
    cmd.stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(s) = case.stdin {
        stdin.write_all(s.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    eprintln!("docker stderr: {}", String::from_utf8_lossy(&out.stderr));
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap(),
    )
}

fn lade(rootfs: &Path, case: &Case, vol: &Path, work: &Path) -> (String, i32) {
    let mut spec = SandboxSpec::new(
        Rootfs::Overlay {
            lowerdirs: vec![rootfs.to_path_buf()],
            upperdir: work.join("upper"),
        },
        work.join("scratch"),
        vec!["sh".into(), "-c".into(), case.script.into()],
    );
    spec.hostname = "sbx".into();
    spec.etc = EtcFiles::docker_defaults(NetworkMode::None);
    let env: Vec<String> = case.env.iter().map(|s| s.to_string()).collect();
    spec.process.env = docker_env(&env, "sbx", false);
    spec.process.user = case.user.into();
    if !case.workdir.is_empty() {
        spec.process.cwd = case.workdir.into();
    }
    spec.process.additional_groups = case.group_add.iter().map(|s| s.to_string()).collect();
    let mode = if case.volume_ro { ":ro" } else { "" };
    spec.mounts
        .push(BindMount::parse(&format!("{}:/vol{mode}", vol.display())).unwrap());
    let (out_r, out_w): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let (in_r, in_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let sb = Runtime::with_init_binary(env!("CARGO_BIN_EXE_lade-sandbox"))
        .spawn(
            &spec,
            StdioSet {
                stdin: Stdio::Fd(in_r),
                stdout: Stdio::Fd(out_w),
                stderr: Stdio::Inherit,
            },
        )
        .unwrap();
    let mut w = std::fs::File::from(in_w);
    if let Some(s) = case.stdin {
        w.write_all(s.as_bytes()).unwrap();
    }
    drop(w);
    let mut out = String::new();
    std::fs::File::from(out_r).read_to_string(&mut out).unwrap();
    let done = sb.wait().unwrap();
    std::fs::remove_dir_all(work.join("upper")).unwrap();
    (out, done.status.code())
}

#[test]
fn behaves_like_docker_run() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the docker comparison needs root: run the tests as root"
    );
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let rootfs = tmp.path().join("rootfs");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/mkrootfs.sh");
    assert!(Command::new(root).arg(&rootfs).status().unwrap().success());
    // root a member of a group (as in alpine's /etc/group): docker gives an empty -u root's
    // memberships too
    let group = rootfs.join("etc/group");
    let text = std::fs::read_to_string(&group).unwrap();
    std::fs::write(
        &group,
        text.replace("wheel:x:10:lade\n", "wheel:x:10:lade,root\n"),
    )
    .unwrap();
    let image = import(&rootfs, &tmp.path().join("rootfs.tar"));
    let vol = tmp.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("f"), "host file\n").unwrap();

    let cases = [
        Case {
            script: IDENTITY,
            ..BASE
        },
        Case {
            user: "lade",
            script: IDENTITY,
            ..BASE
        },
        Case {
            user: "1000:audio",
            script: IDENTITY,
            ..BASE
        },
        Case {
            user: "4242",
            workdir: "/tmp",
            script: IDENTITY,
            ..BASE
        },
        Case {
            user: "lade",
            group_add: &["wheel", "777"],
            script: IDENTITY,
            ..BASE
        },
        Case {
            workdir: "/does/not/exist",
            env: &["FOO=bar baz", "PATH=/bin:/sbin", "FOO=second"],
            script: IDENTITY,
            ..BASE
        },
        Case {
            user: "lade",
            workdir: "/root",
            script: "pwd; ls 2>&1; echo rc=$?",
            ..BASE
        },
        Case {
            // docker cleans the working directory before creating it: no /made/by
            user: "lade",
            workdir: "/made/by/../run",
            script: "pwd; ls -d /made/*; stat -c '%n %a %u:%g' /made /made/run",
            ..BASE
        },
        Case {
            script: "for f in /dev/* /dev/pts/*; do stat -c '%n %F %a %U %G %t:%T' $f; done",
            ..BASE
        },
        Case {
            script:
                "awk '$5 !~ /^\\/sys\\/fs\\/cgroup/ {print $5, $6}' /proc/self/mountinfo | sort",
            ..BASE
        },
        Case {
            script:
                "cat /etc/hosts /etc/hostname; hostname; ls /proc/self/fd; ip -o link | cut -d: -f2",
            ..BASE
        },
        Case {
            script: "cat /vol/f; echo w > /vol/w && cat /vol/w; rm /vol/w",
            ..BASE
        },
        Case {
            volume_ro: true,
            script: "cat /vol/f; touch /vol/x 2>&1 | sed 's/^touch: //'",
            ..BASE
        },
        Case {
            stdin: Some("line one\nline two\n"),
            script: "wc -l; cat",
            ..BASE
        },
        Case {
            script: "exit 42",
            ..BASE
        },
        Case {
            script: "sh -c 'kill -KILL $$'; exit $?",
            ..BASE
        },
        Case {
            script: "echo x > /tmp/f; rm /bin/sh.missing 2>&1; ulimit -c; ulimit -s",
            ..BASE
        },
    ];
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let work = tmp.path().join(format!("case{i}"));
        std::fs::create_dir(&work).unwrap();
        let want = docker(&image.tag, case, &vol);
        let got = lade(&rootfs, case, &vol, &work);
        if want != got {
            failures.push(format!(
                "case {i} `{}` (user {:?}, workdir {:?}):\n--- docker (exit {})\n{}--- lade (exit {})\n{}",
                case.script, case.user, case.workdir, want.1, want.0, got.1, got.0
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
