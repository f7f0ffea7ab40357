//! The `lade` binary is the sandbox init: `lade_runtime` re-executes it as
//! `lade __lade-sandbox-init`, and `main` hands over before clap (needs root).

use std::path::PathBuf;
use std::process::Command;

use lade_runtime::{Rootfs, Runtime, SandboxSpec, Stdio, StdioSet};

use crate::common::{lade, lade_bin, workspace_root};

#[test]
fn lade_binary_serves_as_the_sandbox_init() {
    assert!(
        nix_is_root(),
        "this test starts a real sandbox and needs root: run the tests as root"
    );
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    let st = Command::new(workspace_root().join("testdata/mkrootfs.sh"))
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "testdata/mkrootfs.sh failed (needs busybox-static)"
    );
    let spec = SandboxSpec::new(
        Rootfs::Overlay {
            lowerdirs: vec![rootfs],
            upperdir: tmp.path().join("upper"),
        },
        tmp.path().join("scratch"),
        vec![
            "sh".into(),
            "-c".into(),
            "echo pid $$; echo hi > /new".into(),
        ],
    );
    let out_path: PathBuf = tmp.path().join("out");
    let out = std::fs::File::create(&out_path).unwrap();
    let sandbox = Runtime::with_init_binary(lade_bin())
        .spawn(
            &spec,
            StdioSet {
                stdin: Stdio::Null,
                stdout: Stdio::Fd(out.into()),
                stderr: Stdio::Inherit,
            },
        )
        .unwrap();
    let done = sandbox.wait().unwrap();
    assert!(done.status.success(), "{}", done.status);
    assert_eq!(std::fs::read_to_string(&out_path).unwrap(), "pid 1\n");
    let upper = done.upperdir.unwrap();
    assert_eq!(std::fs::read_to_string(upper.join("new")).unwrap(), "hi\n");
}

#[test]
fn init_entry_point_refuses_to_run_by_hand() {
    let out = lade().arg(lade_runtime::INIT_ARG).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("internal to lade"));
}

fn nix_is_root() -> bool {
    // The effective uid from /proc (no libc in this crate's dev-dependencies).
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
}
