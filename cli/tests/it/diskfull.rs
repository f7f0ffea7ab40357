//! A full disk (GUIDE §4 item 15): the store lives on a small tmpfs mounted by the test, and
//! `lade load`, `lade import`, `lade pull` and `lade system unpack` each need more than is free.
//! Every one must fail with a message that says the disk is full, names the store's path and
//! says what to do; leave nothing in `tmp/`; change nothing else in the store; and leave it
//! usable: `system check --verify` is clean, the image stored before is intact and a small load
//! works afterwards.
//!
//! Mounting needs root (CAP_SYS_ADMIN); without it the tests fail loudly.

use std::path::{Path, PathBuf};
use std::process::Command;

use lade_registry::testing::TestRegistry;

use crate::common::*;
use crate::store::random_file;

/// A tmpfs of `size` mounted on a fresh temp dir; unmounted on drop.
struct SmallFs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    fn new(size: &str) -> SmallFs {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
            .arg("lade-test-diskfull")
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a {size} tmpfs and needs root (CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs { path, _dir: dir }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// A store on a tmpfs of `size` (scratch files stay on the normal disk) holding a small image,
/// `keep:1`. Returns the mount (drop it last), the store, and the fingerprint of the store.
fn full_store_setup(size: &str) -> (SmallFs, TestStore, Vec<String>) {
    let fs = SmallFs::new(size);
    let ts = TestStore {
        dir: tempfile::tempdir().unwrap(),
        root: fs.path.join("store"),
    };
    let small = ts.path("small");
    std::fs::create_dir_all(small.join("etc")).unwrap();
    std::fs::write(small.join("etc/hostname"), "keep\n").unwrap();
    random_file(&small.join("data"), 200_000, 7);
    run_ok(ts.lade().arg("import").arg(&small).arg("keep:1"));
    let before = ts.fingerprint();
    (fs, ts, before)
}

/// An archive (`lade save`) of a one-layer image made from a directory holding `bytes` of
/// incompressible data, named `name`, built in a scratch store on the normal disk.
fn archive_of(scratch: &Path, name: &str, bytes: usize, seed: u64) -> PathBuf {
    let src = TestStore::new();
    let dir = scratch.join(unique("rootfs"));
    std::fs::create_dir_all(&dir).unwrap();
    random_file(&dir.join("blob.bin"), bytes, seed);
    run_ok(src.lade().arg("import").arg(&dir).arg(name));
    let out = scratch.join(unique("archive")).with_extension("tar");
    run_ok(src.lade().args(["save", "-o"]).arg(&out).arg(name));
    out
}

/// The failure says the disk is full, names the store and says what to do.
fn assert_disk_full_message(err: &str, ts: &TestStore) {
    assert!(err.starts_with("error: "), "{err}");
    // Said as such, not as a corrupt input whose cause happens to mention it.
    assert!(err.contains(": no space left on device: cannot "), "{err}");
    assert!(!err.contains("not a valid"), "{err}");
    assert!(
        err.contains(&ts.root.display().to_string()),
        "the message should name the store {}: {err}",
        ts.root.display()
    );
    assert!(
        err.contains("free space") && err.contains("lade prune"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

/// Nothing left in tmp/ (checked before any other lade command could clean it), nothing else
/// changed, the store checks clean, `keep:1` is intact and a small load works.
fn assert_store_usable(ts: &TestStore, before: &[String], label: &str) {
    let left: Vec<_> = std::fs::read_dir(ts.root.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{label}: temp files left: {left:?}");
    assert_eq!(ts.fingerprint(), before, "{label}: the store changed");
    let out = run_ok(ts.lade().args(["system", "check", "--verify"]));
    assert!(out.contains("store is consistent"), "{label}: {out}");
    let inspect = run_ok(ts.lade().args(["inspect", "keep:1"]));
    assert!(inspect.contains("\"Id\""), "{label}: {inspect}");
    let small = archive_of(ts.dir.path(), "later:1", 10_000, 99);
    let out = run_ok(ts.lade().args(["load", "-i"]).arg(&small));
    assert!(out.contains("Loaded image: later:1"), "{label}: {out}");
    run_ok(ts.lade().args(["rmi", "later:1"]));
    run_ok(ts.lade().arg("prune"));
}

#[test]
fn load_of_an_archive_bigger_than_the_disk() {
    let (_fs, ts, before) = full_store_setup("8m");
    let big = archive_of(ts.dir.path(), "big:1", 12 << 20, 1);
    let err = run_fail(ts.lade().args(["load", "-i"]).arg(&big));
    assert_disk_full_message(&err, &ts);
    assert!(
        err.contains(&format!("cannot load {}", big.display())),
        "{err}"
    );
    assert_store_usable(&ts, &before, "load");

    // The same through standard input, gzip-compressed.
    let gz = ts.path("big.tar.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -1 -c '{}' > '{}'",
            big.display(),
            gz.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    // (run_fail would give it /dev/null as standard input)
    let out = ts
        .lade()
        .arg("load")
        .stdin(std::fs::File::open(&gz).unwrap())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_disk_full_message(&err, &ts);
    assert!(err.contains("cannot load the archive from stdin"), "{err}");
    assert_store_usable(&ts, &before, "load from stdin");
}

#[test]
fn import_of_a_rootfs_bigger_than_the_disk() {
    let (_fs, ts, before) = full_store_setup("8m");
    let dir = ts.path("bigroot");
    std::fs::create_dir_all(dir.join("usr")).unwrap();
    random_file(&dir.join("usr/big.bin"), 12 << 20, 2);

    // A directory: lade writes the tar itself.
    let err = run_fail(ts.lade().arg("import").arg(&dir).arg("big:1"));
    assert_disk_full_message(&err, &ts);
    assert!(
        err.contains(&format!("cannot import {}", dir.display())),
        "{err}"
    );
    assert_store_usable(&ts, &before, "import DIR");

    // A tarball.
    let tar = ts.path("bigroot.tar");
    run_ok(
        Command::new("tar")
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(&dir)
            .arg("."),
    );
    let err = run_fail(ts.lade().arg("import").arg(&tar).arg("big:1"));
    assert_disk_full_message(&err, &ts);
    assert!(
        err.contains(&format!("cannot import {}", tar.display())),
        "{err}"
    );
    assert_store_usable(&ts, &before, "import TAR");
}

#[test]
fn pull_of_an_image_bigger_than_the_disk() {
    let reg = TestRegistry::plain();
    let (_fs, ts, before) = full_store_setup("8m");
    let home = ts.path("home");
    let with_home = |c: &mut Command| {
        c.env("HOME", &home)
            .env("LADE_CONFIG", home.join("lade"))
            .env("DOCKER_CONFIG", home.join("docker"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("LADE_CERTS_DIR")
            .env_remove("LADE_INSECURE_REGISTRIES");
    };
    // Push a 32 MB image from a store on the normal disk (3 times the free space, far more
    // than the few MB the download can run ahead of the store).
    let src = TestStore::new();
    let dir = src.path("rootfs");
    std::fs::create_dir_all(&dir).unwrap();
    random_file(&dir.join("big.bin"), 32 << 20, 3);
    let name = format!("{}/lade-diskfull/big:1", reg.host());
    run_ok(src.lade().arg("import").arg(&dir).arg(&name));
    let mut push = src.lade();
    with_home(&mut push);
    run_ok(push.args(["push", &name]));

    let mut pull = ts.lade();
    with_home(&mut pull);
    let out = pull
        .args(["pull", &name])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_disk_full_message(&err, &ts);
    assert!(err.contains(&format!("cannot pull {name}")), "{err}");
    // The download stopped when the disk filled up; it did not fetch the rest for nothing.
    let progress = String::from_utf8_lossy(&out.stdout);
    assert!(progress.contains("Downloading"), "{progress}");
    assert!(!progress.contains("Download complete"), "{progress}\n{err}");
    assert_store_usable(&ts, &before, "pull");
}

#[test]
fn unpack_that_runs_out_of_space() {
    let (_fs, ts, _) = full_store_setup("12m");
    // 5 + 4 of the 12 MiB are blobs; the 5 MiB snapshot of `mid:1` does not fit in the rest.
    let mid = archive_of(ts.dir.path(), "mid:1", 5 << 20, 4);
    run_ok(ts.lade().args(["load", "-i"]).arg(&mid));
    let filler = archive_of(ts.dir.path(), "filler:1", 4 << 20, 5);
    run_ok(ts.lade().args(["load", "-i"]).arg(&filler));
    let before = ts.fingerprint();
    let err = run_fail(ts.lade().args(["system", "unpack", "mid:1"]));
    assert_disk_full_message(&err, &ts);
    assert!(err.contains("cannot unpack mid:1"), "{err}");
    assert!(
        std::fs::read_dir(ts.root.join("snapshots"))
            .unwrap()
            .next()
            .is_none(),
        "no partial snapshot"
    );
    assert_store_usable(&ts, &before, "unpack");
    // With space freed as the message says, the same unpack works.
    run_ok(ts.lade().args(["rmi", "filler:1"]));
    run_ok(ts.lade().arg("prune"));
    let out = run_ok(ts.lade().args(["system", "unpack", "mid:1"]));
    assert!(out.starts_with("lowerdir="), "{out}");
    let out = run_ok(ts.lade().args(["system", "check", "--verify"]));
    assert!(out.contains("store is consistent"), "{out}");
}
