//! Checklist items 1-7 of GUIDE §4 (tar extraction), each with a test, plus overlay whiteouts.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::*;
use crate::tarfmt::ustar;

/// One raw tar entry: names are written verbatim (no sanitising), as an attacker would.
enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
}

fn tar(entries: &[E<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let (name, kind, data, link): (&str, u8, &[u8], &str) = match e {
            E::File(n, d) => (n, b'0', d, ""),
            E::Dir(n) => (n, b'5', b"", ""),
            E::Sym(n, l) => (n, b'2', b"", l),
            E::Hard(n, l) => (n, b'1', b"", l),
        };
        let mode = if kind == b'5' { 0o755 } else { 0o644 };
        out.extend_from_slice(&ustar(
            name.as_bytes(),
            mode,
            0,
            0,
            data.len() as u64,
            0,
            kind,
            link.as_bytes(),
            (0, 0),
        ));
        out.extend_from_slice(data);
        out.extend_from_slice(crate::tarfmt::tar_padding(data.len() as u64));
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn apply(root: &Path, t: &[u8]) -> Result<ExtractStats> {
    extract(t, root, &ExtractOptions::default())
}

fn overlay(root: &Path, t: &[u8]) -> Result<ExtractStats> {
    let opts = ExtractOptions {
        whiteouts: WhiteoutMode::Overlay,
        ..Default::default()
    };
    extract(t, root, &opts)
}

/// A temp dir with `root/` (extraction root) and `outside/` (a stand-in for the host).
fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let outside = t.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"host").unwrap();
    (t, root, outside)
}

fn host_untouched(outside: &Path) {
    let names: Vec<_> = fs::read_dir(outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["secret"],
        "something was written outside the root"
    );
    assert_eq!(fs::read(outside.join("secret")).unwrap(), b"host");
    assert_eq!(fs::metadata(outside.join("secret")).unwrap().nlink(), 1);
}

#[test]
fn item1_dotdot_and_absolute_names_stay_inside() {
    let (t, root, outside) = setup();
    let o = outside.to_str().unwrap();
    let t1 = tar(&[
        E::File("../escape1", b"a"),
        E::File("/../escape2", b"b"),
        E::File("a/../../../escape3", b"c"),
        E::File(&format!("{o}/abs"), b"d"),
        E::File("../outside/secret", b"pwned"),
    ]);
    apply(&root, &t1).unwrap();
    host_untouched(&outside);
    assert!(!t.path().join("escape1").exists());
    assert_eq!(fs::read(root.join("escape1")).unwrap(), b"a");
    assert_eq!(fs::read(root.join("escape2")).unwrap(), b"b");
    assert_eq!(fs::read(root.join("escape3")).unwrap(), b"c");
    assert_eq!(
        fs::read(root.join(o.trim_start_matches('/')).join("abs")).unwrap(),
        b"d"
    );
    assert_eq!(fs::read(root.join("outside/secret")).unwrap(), b"pwned");
}

#[test]
fn item2_symlink_then_write_through_it_stays_inside() {
    let (_t, root, outside) = setup();
    let o = outside.to_str().unwrap();
    // etc -> /etc style: an absolute symlink to a host path, then a file below it.
    let t1 = tar(&[
        E::Sym("etc", o),
        E::File("etc/secret", b"pwned"),
        E::File("etc/new", b"x"),
    ]);
    let r = apply(&root, &t1);
    host_untouched(&outside);
    if r.is_ok() {
        // Resolved inside the root: the link target is taken relative to the root.
        assert_eq!(
            fs::read(root.join(o.trim_start_matches('/')).join("secret")).unwrap(),
            b"pwned"
        );
    }
    // A relative symlink climbing out, then a write below it.
    let root2 = root.parent().unwrap().join("root2");
    fs::create_dir(&root2).unwrap();
    let t2 = tar(&[
        E::Sym("up", "../../../../../../../.."),
        E::File("up/escape", b"x"),
    ]);
    apply(&root2, &t2).unwrap();
    assert_eq!(fs::read(root2.join("escape")).unwrap(), b"x");
    assert!(!Path::new("/escape").exists());
    // The classic: etc -> /etc, then etc/passwd lands in ROOT/etc/passwd.
    let root3 = root.parent().unwrap().join("root3");
    fs::create_dir_all(root3.join("real")).unwrap();
    let t3 = tar(&[E::Sym("etc", "/real"), E::File("etc/passwd", b"root:x:0:0")]);
    apply(&root3, &t3).unwrap();
    assert_eq!(fs::read(root3.join("real/passwd")).unwrap(), b"root:x:0:0");
    assert_eq!(
        fs::read_link(root3.join("etc")).unwrap(),
        Path::new("/real")
    );
}

#[test]
fn item3_hardlinks_cannot_reach_outside() {
    let (_t, root, outside) = setup();
    let o = outside.to_str().unwrap();
    let t1 = tar(&[E::Hard("pw", "../../outside/secret")]);
    let e = apply(&root, &t1).unwrap_err().to_string();
    assert!(e.contains("not in this layer"), "{e}");
    host_untouched(&outside);
    let t2 = tar(&[E::Hard("pw", &format!("{o}/secret"))]);
    assert!(apply(&root, &t2).is_err());
    host_untouched(&outside);
    // Through a symlinked directory.
    let t3 = tar(&[E::Sym("d", o), E::Hard("pw", "d/secret")]);
    assert!(apply(&root, &t3).is_err());
    host_untouched(&outside);
    // A legitimate in-layer hardlink works.
    let t4 = tar(&[E::File("a", b"data"), E::Hard("b", "a")]);
    apply(&root, &t4).unwrap();
    assert_eq!(fs::metadata(root.join("b")).unwrap().nlink(), 2);
}

#[test]
fn item4_bad_whiteouts_rejected_and_good_ones_stay_inside() {
    for bad in [".wh..", ".wh...", ".wh.", "dir/.wh.."] {
        let (_t, root, outside) = setup();
        fs::create_dir(root.join("dir")).unwrap();
        let e = apply(&root, &tar(&[E::File(bad, b"")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid whiteout"), "{bad}: {e}");
        let e = overlay(&root, &tar(&[E::File(bad, b"")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid whiteout"), "{bad}: {e}");
        host_untouched(&outside);
        assert!(root.join("dir").is_dir());
    }
    let (_t, root, outside) = setup();
    let o = outside.to_str().unwrap();
    fs::write(root.join("x"), b"in").unwrap();
    fs::write(root.join("keep"), b"in").unwrap();
    let t = tar(&[
        E::File(".wh.x", b""),
        E::File("../outside/.wh.secret", b""),
        E::Sym("d", o),
        E::File("d/.wh.secret", b""),
    ]);
    apply(&root, &t).unwrap();
    assert!(!root.join("x").exists());
    assert!(root.join("keep").exists());
    host_untouched(&outside);
}

#[test]
fn item5_dir_swapped_for_symlink_and_back_cannot_redirect() {
    let (_t, root, outside) = setup();
    let o = outside.to_str().unwrap();
    apply(&root, &tar(&[E::Dir("a/"), E::File("a/f", b"1")])).unwrap();
    // Layer 2: a becomes a symlink to the "host".
    apply(&root, &tar(&[E::Sym("a", o)])).unwrap();
    assert!(fs::symlink_metadata(root.join("a"))
        .unwrap()
        .file_type()
        .is_symlink());
    // Layer 3: writes below a.
    let _ = apply(
        &root,
        &tar(&[E::File("a/g", b"pwned"), E::File("a/secret", b"pwned")]),
    );
    host_untouched(&outside);
    // Layer 4: back to a directory.
    apply(&root, &tar(&[E::Dir("a/"), E::File("a/h", b"2")])).unwrap();
    assert!(root.join("a").is_dir());
    assert_eq!(fs::read(root.join("a/h")).unwrap(), b"2");
    host_untouched(&outside);
    // All in one tar: dir, symlink replacing it, write through it.
    let (_t2, root2, outside2) = setup();
    let o2 = outside2.to_str().unwrap();
    let t = tar(&[
        E::Dir("b/"),
        E::Sym("b", o2),
        E::File("b/secret", b"pwned"),
        E::Dir("b/"),
        E::File("b/z", b"z"),
    ]);
    let _ = apply(&root2, &t);
    host_untouched(&outside2);
    // The same sequence unpacked as overlay snapshots.
    let (_t3, root3, outside3) = setup();
    let o3 = outside3.to_str().unwrap();
    let _ = overlay(
        &root3,
        &tar(&[E::Sym("c", o3), E::File("c/secret", b"pwned")]),
    );
    host_untouched(&outside3);
}

#[test]
fn item6_absolute_symlinks_extract_unchanged() {
    let (_t, root, _o) = setup();
    let t = tar(&[
        E::Dir("bin/"),
        E::File("bin/busybox", b"\x7fELF"),
        E::Sym("bin/sh", "/bin/busybox"),
        E::Sym("lib64", "/usr/lib64"),
        E::Sym("dangling", "/does/not/exist"),
        E::Sym("rel", "../bin/sh"),
    ]);
    overlay(&root, &t).unwrap();
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(
        fs::read_link(root.join("lib64")).unwrap(),
        Path::new("/usr/lib64")
    );
    assert_eq!(
        fs::read_link(root.join("dangling")).unwrap(),
        Path::new("/does/not/exist")
    );
    assert_eq!(
        fs::read_link(root.join("rel")).unwrap(),
        Path::new("../bin/sh")
    );
}

#[test]
fn item7_decompression_bomb_is_capped() {
    let (_t, root, _o) = setup();
    let big = vec![0u8; 8 << 20];
    let t = tar(&[E::File("zeros", &big)]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&t).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() < 100_000);
    let (_, r) = crate::tarfmt::decompress(&gz[..]).unwrap();
    let opts = ExtractOptions {
        max_bytes: 1 << 20,
        what: "layer sha256:test".into(),
        ..Default::default()
    };
    let e = extract(r, &root, &opts).unwrap_err().to_string();
    assert!(e.contains("exceeds the limit of 1048576 bytes"), "{e}");
    assert!(e.contains("layer sha256:test"), "{e}");
}

#[test]
fn overlay_whiteouts_become_char_devices_and_opaque_xattrs() {
    let (_t, root, _o) = setup();
    let t = tar(&[
        E::Dir("d/"),
        E::File("d/.wh..wh..opq", b""),
        E::File("d/new", b"n"),
        E::File(".wh.gone", b""),
        E::File("e/.wh.deep", b""),
    ]);
    overlay(&root, &t).unwrap();
    let m = fs::symlink_metadata(root.join("gone")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), 0);
    assert!(fs::symlink_metadata(root.join("e/deep"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert_eq!(
        xattr::get(root.join("d"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert!(!root.join("d/.wh..wh..opq").exists());
    assert!(root.join("d/new").exists());
}

/// A snapshot for a rootless sandbox (mounted with `userxattr`) carries `user.overlay.opaque`,
/// the one namespace an unprivileged user can write and such a mount reads.
#[test]
fn overlay_opaque_in_the_user_namespace() {
    let (_t, root, _o) = setup();
    let t = tar(&[
        E::Dir("d/"),
        E::File("d/.wh..wh..opq", b""),
        E::File("d/new", b"n"),
    ]);
    let opts = ExtractOptions {
        whiteouts: WhiteoutMode::Overlay,
        overlay_xattrs: OverlayXattrs::User,
        ..Default::default()
    };
    extract(&t[..], &root, &opts).unwrap();
    assert_eq!(
        xattr::get(root.join("d"), "user.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        xattr::get(root.join("d"), "trusted.overlay.opaque").unwrap(),
        None
    );
    assert!(!root.join("d/.wh..wh..opq").exists());
    assert_eq!(OverlayXattrs::for_euid(0), OverlayXattrs::Trusted);
    assert_eq!(OverlayXattrs::for_euid(1000), OverlayXattrs::User);
}

/// An archive cannot mark anything opaque (or otherwise speak for overlayfs) through PAX
/// xattr records, in either namespace; other xattrs are restored.
#[test]
fn overlay_xattrs_from_the_archive_are_dropped() {
    let (_t, root, _o) = setup();
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([
        ("SCHILY.xattr.user.overlay.opaque", &b"y"[..]),
        ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
        ("SCHILY.xattr.user.keep", &b"v"[..]),
    ])
    .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_path("d/").unwrap();
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    let t = b.into_inner().unwrap();
    for mode in [WhiteoutMode::Overlay, WhiteoutMode::Apply] {
        let opts = ExtractOptions {
            whiteouts: mode,
            ..Default::default()
        };
        let _ = fs::remove_dir_all(root.join("d"));
        extract(&t[..], &root, &opts).unwrap();
        let names: Vec<String> = xattr::list(root.join("d"))
            .unwrap()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("security."))
            .collect();
        assert_eq!(names, vec!["user.keep".to_string()], "{mode:?}");
    }
}

/// Directory modes come last, so a read-only directory of the archive is still filled (an
/// unprivileged extraction could not write into a `0555` directory), and a tree with such
/// directories can still be removed by its owner.
#[test]
fn read_only_directories_are_filled_then_locked() {
    let (_t, root, _o) = setup();
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, mode) in [
        ("ro/", tar::EntryType::Directory, 0o555),
        ("ro/sub/", tar::EntryType::Directory, 0o500),
        ("ro/sub/f", tar::EntryType::Regular, 0o444),
        ("ro/g", tar::EntryType::Regular, 0o644),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(if kind == tar::EntryType::Regular {
            1
        } else {
            0
        });
        h.set_path(path).unwrap();
        h.set_cksum();
        let data: &[u8] = if kind == tar::EntryType::Regular {
            b"x"
        } else {
            b""
        };
        b.append(&h, data).unwrap();
    }
    let t = b.into_inner().unwrap();
    // (Run as root here; `cli/tests/it/run.rs` unpacks such an image as an unprivileged user.)
    let owned = root.join("owned");
    fs::create_dir(&owned).unwrap();
    extract(&t[..], &owned, &ExtractOptions::default()).unwrap();
    let mode = |p: &str| fs::metadata(owned.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(
        (mode("ro"), mode("ro/sub"), mode("ro/sub/f")),
        (0o555, 0o500, 0o444)
    );
    assert_eq!(fs::read(owned.join("ro/sub/f")).unwrap(), b"x");
    crate::store::remove_tree(&owned).unwrap();
    assert!(!owned.exists());
}

#[test]
fn apply_opaque_keeps_same_layer_entries() {
    let (_t, root, _o) = setup();
    apply(
        &root,
        &tar(&[
            E::Dir("d/"),
            E::File("d/old", b"o"),
            E::File("d/old2", b"o"),
        ]),
    )
    .unwrap();
    apply(
        &root,
        &tar(&[
            E::Dir("d/"),
            E::File("d/new", b"n"),
            E::File("d/.wh..wh..opq", b""),
        ]),
    )
    .unwrap();
    let mut names: Vec<_> = fs::read_dir(root.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["new"]);
}

#[test]
fn keep_mode_extracts_whiteout_names_as_files() {
    let (_t, root, outside) = setup();
    let opts = ExtractOptions {
        whiteouts: WhiteoutMode::Keep,
        ..Default::default()
    };
    let t = tar(&[
        E::File("x", b"x"),
        E::File(".wh.x", b"marker"),
        E::Dir("d/"),
        E::File("d/.wh..wh..opq", b""),
        E::File("../outside/.wh.secret", b""),
    ]);
    extract(&t[..], &root, &opts).unwrap();
    assert_eq!(fs::read(root.join("x")).unwrap(), b"x");
    assert_eq!(fs::read(root.join(".wh.x")).unwrap(), b"marker");
    assert!(root.join("d/.wh..wh..opq").is_file());
    assert!(root.join("outside/.wh.secret").is_file());
    host_untouched(&outside);
}

#[test]
fn truncated_tar_is_an_error() {
    let (_t, root, _o) = setup();
    let t = tar(&[E::File("f", &[1u8; 5000])]);
    let e = apply(&root, &t[..2048]).unwrap_err().to_string();
    assert!(
        e.contains("truncated") || e.contains("not a valid tar"),
        "{e}"
    );
}

#[test]
fn round_trip_through_writer_preserves_tree() {
    let (_t, root, _o) = setup();
    let src = root.parent().unwrap().join("src");
    fs::create_dir_all(src.join("d/e")).unwrap();
    fs::write(src.join("d/e/f"), b"content").unwrap();
    std::os::unix::fs::symlink("/abs/target", src.join("l")).unwrap();
    fs::set_permissions(
        src.join("d/e/f"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    let mut out = Vec::new();
    crate::tarfmt::write_tar(&src, &crate::tarfmt::TarOptions::default(), &mut out).unwrap();
    overlay(&root, &out).unwrap();
    assert_eq!(fs::read(root.join("d/e/f")).unwrap(), b"content");
    assert_eq!(
        fs::metadata(root.join("d/e/f")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::read_link(root.join("l")).unwrap(),
        Path::new("/abs/target")
    );
    let mut again = Vec::new();
    crate::tarfmt::write_tar(&root, &crate::tarfmt::TarOptions::default(), &mut again).unwrap();
    assert_eq!(out, again, "unpack + repack is byte-identical");
}

#[test]
fn owner_override_applies_to_every_entry_but_not_to_implied_dirs() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root (chown): run the tests as root, as CI does");
    }
    let (_t, root, _outside) = setup();
    let t1 = tar(&[
        E::Dir("d/"),
        E::File("d/f", b"x"),
        E::Sym("d/l", "f"),
        E::Hard("d/h", "d/f"),
        E::File("implied/sub/g", b"y"),
    ]);
    let opts = ExtractOptions {
        owner: Some((1234, 5678)),
        ..Default::default()
    };
    extract(&t1[..], &root, &opts).unwrap();
    for p in ["d", "d/f", "d/l", "d/h", "implied/sub/g"] {
        let m = fs::symlink_metadata(root.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 5678), "{p}");
    }
    // directories no entry names are the extracting user's (BuildKit: the root pair)
    for p in ["implied", "implied/sub"] {
        let m = fs::symlink_metadata(root.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0), "{p}");
    }
}

/// A tar of `(name, type, mode, mtime)` entries (files hold one byte).
fn moded(entries: &[(&str, tar::EntryType, u32, u64)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, mode, mtime) in entries {
        let data: &[u8] = if *kind == tar::EntryType::Regular {
            b"x"
        } else {
            b""
        };
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(*kind);
        h.set_mode(*mode);
        h.set_mtime(*mtime);
        h.set_size(data.len() as u64);
        h.set_path(path).unwrap();
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// Every directory mode that lacks some owner permission is deferred, not only those without
/// owner write or search: `0311` (no owner read) must not end up `0711`.
#[test]
fn directory_modes_without_owner_read_are_kept_exactly() {
    let (_t, root, _o) = setup();
    use tar::EntryType::{Directory as D, Regular as F};
    let mut entries = Vec::new();
    let names: Vec<(String, String, u32)> = [0o311, 0o333, 0o300, 0o100, 0o000, 0o1333]
        .iter()
        .map(|m| (format!("d{m:o}/"), format!("d{m:o}/f"), *m))
        .collect();
    for (d, f, m) in &names {
        entries.push((d.as_str(), D, *m, 7));
        entries.push((f.as_str(), F, 0o644, 7));
    }
    apply(&root, &moded(&entries)).unwrap();
    for (d, f, m) in &names {
        assert_eq!(mode_of(&root.join(d)), *m, "{d}");
        assert_eq!(fs::read(root.join(f)).unwrap(), b"x", "{f}");
    }
}

/// The last entry of a path gives the directory its mode and time, as docker's extraction
/// does, also when a file came in between (dir -> file -> dir).
#[test]
fn last_directory_entry_of_a_path_wins() {
    let (_t, root, _o) = setup();
    use tar::EntryType::{Directory as D, Regular as F};
    let t = moded(&[
        ("d/", D, 0o555, 100),
        ("d/f", F, 0o644, 1),
        ("d/", D, 0o755, 200),
        ("e/", D, 0o755, 100),
        ("e/", D, 0o500, 300),
        ("x/", D, 0o555, 100),
        ("x", F, 0o644, 1),
        ("x/", D, 0o750, 400),
    ]);
    apply(&root, &t).unwrap();
    let got = |p: &str| {
        let m = fs::symlink_metadata(root.join(p)).unwrap();
        (m.mode() & 0o7777, m.mtime())
    };
    assert_eq!(got("d"), (0o755, 200));
    assert_eq!(got("e"), (0o500, 300));
    assert_eq!(got("x"), (0o750, 400));
    assert_eq!(fs::read(root.join("d/f")).unwrap(), b"x");
}

/// A directory fix is for the directory its entry made: one removed by a whiteout and made
/// again (here implicitly, as the parent of a later file) keeps its own mode and time.
#[test]
fn directory_fix_skips_another_inode_at_the_same_path() {
    let (_t, root, _o) = setup();
    use tar::EntryType::{Directory as D, Regular as F};
    let t = moded(&[
        ("x/", D, 0o555, 100),
        (".wh.x", F, 0o644, 1),
        ("x/y", F, 0o644, 1),
    ]);
    apply(&root, &t).unwrap();
    assert_eq!(mode_of(&root.join("x")), 0o755);
    assert_ne!(fs::metadata(root.join("x")).unwrap().mtime(), 100);
    assert_eq!(fs::read(root.join("x/y")).unwrap(), b"x");
}

/// Runs `f` on a new thread whose effective ids are nobody's (so without capabilities): raw
/// `setres[ug]id` syscalls change only the calling thread, unlike the libc wrappers.
#[allow(unsafe_code)]
fn as_nobody<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let keep: nix::libc::c_long = -1;
            let id: nix::libc::c_long = 65534;
            // SAFETY: setresgid/setresuid take three integer ids and touch no memory.
            let r = unsafe {
                (
                    nix::libc::syscall(nix::libc::SYS_setresgid, keep, id, keep),
                    nix::libc::syscall(nix::libc::SYS_setresuid, keep, id, keep),
                )
            };
            assert_eq!(r, (0, 0), "this test needs root (setresuid)");
            f()
        })
        .join()
        .unwrap()
    })
}

/// Unprivileged: a child's fix is applied before its parent's, so a parent listed after its
/// children without owner search permission (`0600`) does not make the children's fixes fail
/// (they were skipped silently, leaving `0555` directories at `0755`).
#[test]
fn unprivileged_children_are_fixed_before_their_parent() {
    let (t, root, _o) = setup();
    use tar::EntryType::{Directory as D, Regular as F};
    let tar = moded(&[
        ("p/c/", D, 0o555, 100),
        ("p/c/f", F, 0o644, 1),
        ("p/", D, 0o600, 200),
    ]);
    for p in [t.path(), &root] {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    }
    as_nobody(|| {
        let opts = ExtractOptions::default();
        assert!(!opts.same_owner, "runs unprivileged");
        extract(&tar[..], &root, &opts).unwrap();
    });
    let got = |p: &str| {
        let m = fs::symlink_metadata(root.join(p)).unwrap();
        (m.mode() & 0o7777, m.mtime(), m.uid())
    };
    assert_eq!(got("p"), (0o600, 200, 65534));
    assert_eq!(got("p/c"), (0o555, 100, 65534));
    assert_eq!(fs::read(root.join("p/c/f")).unwrap(), b"x");
}
