//! Bad input from the command line: clear one-line errors (never a panic), non-zero exit, and
//! nothing changed in the store. And a standard output closed early (`lade inspect X | head -1`)
//! ends the command quietly with status 141, as for a process killed by SIGPIPE.

use std::os::fd::OwnedFd;
use std::process::{Command, Output, Stdio};

use crate::common::*;

/// A store with one small imported image, `keep:1`.
fn store_with_image() -> TestStore {
    let ts = TestStore::new();
    let dir = ts.path("rootfs");
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/hostname"), "keep\n").unwrap();
    run_ok(ts.lade().arg("import").arg(&dir).arg("keep:1"));
    ts
}

/// Runs `cmd` with standard output a pipe whose read end is already closed.
fn with_closed_stdout(cmd: &mut Command) -> Output {
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    drop(r);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

#[test]
fn a_closed_stdout_ends_every_command_quietly_with_status_141() {
    let ts = store_with_image();
    let before = ts.fingerprint();
    run_ok(ts.lade().args(["tag", "keep:1", "other:1"]));
    let commands: &[&[&str]] = &[
        &["inspect", "keep:1"],
        &["images"],
        &["images", "-q"],
        &["images", "--format", "json"],
        &["history", "keep:1"],
        &["save", "keep:1"],
        &["system", "check"],
        &["system", "unpack", "keep:1"],
        &["prune", "--dry-run"],
        &["prune", "--all", "--dry-run"],
        &["rmi", "other:1"],
        &["version"],
    ];
    let dockerfile = ts.path("Dockerfile");
    std::fs::write(&dockerfile, "FROM scratch\nCOPY a /b\n").unwrap();
    let dockerfile = dockerfile.display().to_string();
    let parse: &[&str] = &["debug", "parse", "-f", &dockerfile];
    let commands = [commands, &[parse]].concat();
    for args in &commands {
        let out = with_closed_stdout(ts.lade().args(*args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(141),
            "lade {}: {} {stderr}",
            args.join(" "),
            out.status
        );
        assert!(stderr.is_empty(), "lade {}: {stderr}", args.join(" "));
    }
    assert_eq!(ts.temp_entries(), 0);
    // Only `system unpack` added something (the snapshot) and `tag` a tag time in refs.json
    // (the names are as before): nothing else changed or broke.
    let after: Vec<String> = ts
        .fingerprint()
        .into_iter()
        .filter(|l| l == "snapshots/" || !l.starts_with("snapshots/"))
        .filter(|l| !l.starts_with("refs.json "))
        .collect();
    let before: Vec<String> = before
        .into_iter()
        .filter(|l| !l.starts_with("refs.json "))
        .collect();
    assert_eq!(after, before);
    let names = run_ok(ts.lade().args(["images", "--format", "json"]));
    assert_eq!(names.lines().count(), 1, "{names}");
    let row: serde_json::Value = serde_json::from_str(names.trim()).unwrap();
    assert_eq!(
        (row["Repository"].as_str(), row["Tag"].as_str()),
        (Some("keep"), Some("1"))
    );
    let out = run_ok(ts.lade().args(["system", "check", "--verify"]));
    assert!(out.contains("store is consistent"), "{out}");
}

/// Runs a command that must fail cleanly: exit status 1 (not a panic's 101), one `error: ...`
/// line containing every one of `expect`, each OS error once.
fn fails_clearly(cmd: &mut Command, expect: &[&str]) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{cmd:?}: {err}");
    assert!(err.starts_with("error: "), "{cmd:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{cmd:?}: {err}");
    assert!(!err.contains("panicked"), "{cmd:?}: {err}");
    assert!(
        err.matches("(os error").count() <= 1,
        "repeated cause: {err}"
    );
    for e in expect {
        assert!(err.contains(e), "{cmd:?}: expected {e:?} in: {err}");
    }
    err
}

#[test]
fn bad_files_and_paths_are_named_with_what_was_expected() {
    let ts = store_with_image();
    let before = ts.fingerprint();
    let empty = ts.path("empty.tar");
    std::fs::write(&empty, b"").unwrap();
    let dir = ts.path("a-dir");
    std::fs::create_dir(&dir).unwrap();
    let missing = ts.path("missing.tar");
    let d = dir.display().to_string();
    let e = empty.display().to_string();
    let m = missing.display().to_string();

    // lade load
    fails_clearly(
        ts.lade().args(["load", "-i"]).arg(&dir),
        &[&d, "is a directory", "image archive"],
    );
    fails_clearly(
        ts.lade().args(["load", "-i"]).arg(&empty),
        &[&e, "is empty", "image archive"],
    );
    fails_clearly(
        ts.lade().args(["load", "-i"]).arg(&missing),
        &[&m, "No such file"],
    );
    // An empty standard input (run_fail gives /dev/null).
    let err = run_fail(ts.lade().arg("load"));
    assert!(
        err.contains("stdin") && err.contains("the archive is empty"),
        "{err}"
    );
    // An empty tar (end-of-archive blocks only) is just as empty.
    let empty_tar = ts.path("zeros.tar");
    std::fs::write(&empty_tar, [0u8; 1024]).unwrap();
    fails_clearly(
        ts.lade().args(["load", "-i"]).arg(&empty_tar),
        &["the archive is empty"],
    );

    // lade import
    fails_clearly(
        ts.lade().arg("import").arg(&empty).arg("x:1"),
        &[&e, "is empty", "rootfs"],
    );
    fails_clearly(ts.lade().arg("import").arg(&missing), &[&m, "No such file"]);
    fails_clearly(
        ts.lade().args(["import", "-"]),
        &["standard input is empty"],
    );
    fails_clearly(
        ts.lade().args(["import", "-c", "", "-"]),
        &["empty --change"],
    );
    fails_clearly(
        ts.lade().args(["import", "-c", "ENV =x", "-"]),
        &["--change", "ENV names can not be blank"],
    );

    // lade save -o
    fails_clearly(
        ts.lade().args(["save", "-o"]).arg(&dir).arg("keep:1"),
        &[&d, "is a directory", "file name"],
    );
    let nowhere = ts.path("no/such/dir/x.tar");
    fails_clearly(
        ts.lade().args(["save", "-o"]).arg(&nowhere).arg("keep:1"),
        &["no/such/dir", "does not exist"],
    );
    // Unwritable (even for root): /proc takes no new files.
    fails_clearly(
        ts.lade()
            .args(["save", "-o", "/proc/lade-test.tar", "keep:1"]),
        &[
            "cannot write /proc/lade-test.tar",
            "cannot create a file in /proc",
        ],
    );
    assert!(!std::path::Path::new("/proc/lade-test.tar").exists());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing in {d}"
    );

    assert_eq!(ts.fingerprint(), before, "the store changed");
    assert_eq!(ts.temp_entries(), 0);
}

#[test]
fn malformed_references_are_refused_with_the_reason() {
    let ts = store_with_image();
    let before = ts.fingerprint();
    let digest = format!("sha256:{}", "a".repeat(64));
    let cases: Vec<(Vec<String>, &[&str])> = vec![
        (
            vec!["inspect".into(), "UPPER:1".into()],
            &["invalid reference \"UPPER:1\"", "lowercase"],
        ),
        (
            vec!["tag".into(), "keep:1".into(), "a:b:c".into()],
            &["invalid reference \"a:b:c\"", "invalid tag"],
        ),
        (
            vec!["tag".into(), "keep:1".into(), format!("x:1@{digest}")],
            &["digest reference", "NAME[:TAG]"],
        ),
        (
            vec!["tag".into(), "nope:1".into(), "y:1".into()],
            &["no such image: nope:1", "lade images"],
        ),
        (
            vec!["pull".into(), "foo@sha256:zz".into()],
            &["invalid reference", "invalid digest"],
        ),
        (
            vec!["pull".into(), "x".repeat(300)],
            &["invalid reference", "longer than 255"],
        ),
        (
            vec!["push".into(), format!("x:1@{digest}")],
            &["cannot push a digest reference"],
        ),
        (
            vec![
                "save".into(),
                "-o".into(),
                ts.path("x.tar").display().to_string(),
                "bad//name".into(),
            ],
            &["invalid reference \"bad//name\""],
        ),
        (
            vec!["import".into(), "-".into(), "UP:1".into()],
            &["invalid reference \"UP:1\""],
        ),
        (vec!["rmi".into(), "".into()], &["empty reference"]),
    ];
    for (args, expect) in &cases {
        fails_clearly(ts.lade().args(args), expect);
    }
    assert_eq!(ts.fingerprint(), before);
}

#[test]
fn a_store_root_that_is_a_file_is_named() {
    let ts = TestStore::new();
    let file = ts.path("not-a-dir");
    std::fs::write(&file, b"keep me").unwrap();
    for root in [file.clone(), file.join("sub")] {
        let r = root.display().to_string();
        fails_clearly(
            lade().arg("--root").arg(&root).arg("images"),
            &[&r, "is not a directory", "--root"],
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}
