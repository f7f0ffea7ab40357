//! The image store end to end: load/save round trips with docker and skopeo, refused archives,
//! kill -9 during load, concurrent loads, import/tag/rmi/inspect/history/prune.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::*;

/// Every entry of a tar (uncompressed) as `name -> "type mode uid gid size link hash"`.
fn listing(tar_bytes: &[u8], skip: &[&str]) -> BTreeMap<String, String> {
    let mut a = tar::Archive::new(tar_bytes);
    let mut out = BTreeMap::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let name = raw
            .strip_prefix("./")
            .unwrap_or(&raw)
            .trim_end_matches('/')
            .to_string();
        if name.is_empty() || name == "." {
            continue;
        }
        if skip
            .iter()
            .any(|s| name == *s || name.starts_with(&format!("{s}/")))
        {
            continue;
        }
        let h = e.header().clone();
        let mut link = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default();
        if h.entry_type() == tar::EntryType::Link {
            link = link.strip_prefix("./").unwrap_or(&link).to_string();
        }
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let hash = data.iter().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
        });
        out.insert(
            name,
            format!(
                "{:?} {:o} {} {} {} {link} {hash:x}",
                h.entry_type(),
                h.mode().unwrap() & 0o7777,
                h.uid().unwrap(),
                h.gid().unwrap(),
                data.len()
            ),
        );
    }
    out
}

/// The filesystem of a docker image, via `docker create` + `docker export`, minus what docker
/// adds to every container.
pub(crate) fn docker_fs(image: &str) -> BTreeMap<String, String> {
    let id = run_ok(docker().args(["create", "--network=none", image]))
        .trim()
        .to_string();
    let out = docker().args(["export", &id]).output().unwrap();
    let _ = docker()
        .args(["rm", "-f", &id])
        .stdout(Stdio::null())
        .status();
    assert!(out.status.success(), "docker export failed");
    listing(
        &out.stdout,
        &[
            ".dockerenv",
            "dev",
            "proc",
            "sys",
            "etc/hosts",
            "etc/hostname",
            "etc/resolv.conf",
            "etc/mtab",
        ],
    )
}

/// Mounts the image's snapshots read-only with overlayfs and lists the result.
pub(crate) fn overlay_fs(ts: &TestStore, image: &str) -> BTreeMap<String, String> {
    let out = run_ok(ts.lade().args(["system", "unpack", image]));
    let opt = out.trim().to_string();
    assert!(opt.starts_with("lowerdir=") && opt.contains(':'), "{opt}");
    let mnt = ts.path(&unique("mnt"));
    std::fs::create_dir_all(&mnt).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &format!("ro,{opt}")])
            .arg(&mnt),
    );
    let tar = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(&mnt)
        .args(["-cf", "-", "."])
        .output();
    run_ok(Command::new("umount").arg(&mnt));
    let tar = tar.unwrap();
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    listing(
        &tar.stdout,
        &[
            "dev",
            "proc",
            "sys",
            "etc/hosts",
            "etc/hostname",
            "etc/resolv.conf",
            "etc/mtab",
        ],
    )
}

pub(crate) fn app_dockerfile(base: &str) -> String {
    format!(
        r#"FROM {base}
RUN mkdir -p /app && echo hello > /app/hello && ln -s /app/hello /app/abs-link && ln /app/hello /app/hard
RUN rm /etc/group && mkdir -p /opq/d && echo x > /opq/d/x && dd if=/dev/urandom of=/app/big bs=1k count=256 2>/dev/null
RUN rm -rf /opq/d && mkdir /opq/d && echo y > /opq/d/y && chmod 4755 /app/hello && chown 1000:1000 /app/big
ENV FOO=bar
WORKDIR /app
CMD ["cat", "/app/hello"]
"#
    )
}

#[test]
fn docker_archive_round_trip() {
    let ts = TestStore::new();
    let base = docker_base_image(ts.dir.path());
    let name = format!("lade-store-test/{}:v1", unique("app"));
    let app = docker_build(ts.dir.path(), &name, &app_dockerfile(&base.name));
    let id = docker_inspect(&app.name, "{{.Id}}");
    let layers = docker_inspect(&app.name, "{{json .RootFS.Layers}}");
    let fs_before = docker_fs(&app.name);
    assert!(fs_before.contains_key("app/hello") && !fs_before.contains_key("etc/group"));
    let orig = ts.path("orig.tar");
    run_ok(docker().args(["save", "-o"]).arg(&orig).arg(&app.name));

    let out = run_ok(ts.lade().arg("load").arg("-i").arg(&orig));
    assert_eq!(out.trim(), format!("Loaded image: {name}"));
    let inspect: serde_json::Value =
        serde_json::from_str(&run_ok(ts.lade().args(["inspect", &name]))).unwrap();
    assert_eq!(inspect[0]["Id"], id.as_str());
    assert_eq!(inspect[0]["RepoTags"][0], name.as_str());
    assert_eq!(
        serde_json::to_string(&inspect[0]["RootFS"]["Layers"]).unwrap(),
        layers
    );
    assert_eq!(
        inspect[0]["Config"]["Cmd"],
        serde_json::json!(["cat", "/app/hello"])
    );

    // The layer snapshots, stacked by overlayfs, are the image's filesystem.
    assert_eq!(
        overlay_fs(&ts, &name),
        fs_before,
        "snapshots differ from docker's filesystem"
    );

    let saved = ts.path("saved.tar");
    run_ok(ts.lade().args(["save", "-o"]).arg(&saved).arg(&name));
    // The archive is also an OCI image layout.
    require_tool("skopeo", "skopeo");
    let raw = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--config", "--raw"])
            .arg(format!("oci-archive:{}", saved.display())),
    );
    let config_digest = format!("sha256:{}", sha256_hex(raw.as_bytes()));
    assert_eq!(config_digest, id);

    run_ok(docker().args(["rmi", &name]));
    let out = run_ok(docker().args(["load", "-i"]).arg(&saved));
    assert!(out.contains(&format!("Loaded image: {name}")), "{out}");
    assert_eq!(
        docker_inspect(&name, "{{.Id}}"),
        id,
        "config changed in the round trip"
    );
    assert_eq!(docker_inspect(&name, "{{json .RootFS.Layers}}"), layers);
    let ran = run_ok(docker().args(["run", "--rm", "--network=none", &name]));
    assert_eq!(ran, "hello\n");
    assert_eq!(
        docker_fs(&name),
        fs_before,
        "filesystem changed in the round trip"
    );
}

fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn oci_archive_round_trip_via_skopeo() {
    require_tool("skopeo", "skopeo");
    let ts = TestStore::new();
    let base = docker_base_image(ts.dir.path());
    let name = format!("lade-store-test/{}:v1", unique("oci"));
    let app = docker_build(ts.dir.path(), &name, &app_dockerfile(&base.name));
    let docker_id = docker_inspect(&app.name, "{{.Id}}");
    let layers = docker_inspect(&app.name, "{{json .RootFS.Layers}}");
    let fs_before = docker_fs(&app.name);

    // OCI archive (skopeo converts the config to OCI and gzips the layers).
    let oci = ts.path("oci.tar");
    run_ok(Command::new("skopeo").args([
        "copy",
        "-q",
        &format!("docker-daemon:{name}"),
        &format!("oci-archive:{}:{name}", oci.display()),
    ]));
    let oci_config = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--config", "--raw"])
            .arg(format!("oci-archive:{}", oci.display())),
    );
    let oci_id = format!("sha256:{}", sha256_hex(oci_config.as_bytes()));
    let out = run_ok(ts.lade().arg("load").arg("-i").arg(&oci));
    assert_eq!(out.trim(), format!("Loaded image: {name}"));
    let inspect: serde_json::Value =
        serde_json::from_str(&run_ok(ts.lade().args(["inspect", &name]))).unwrap();
    assert_eq!(inspect[0]["Id"], oci_id.as_str());
    assert_eq!(
        serde_json::to_string(&inspect[0]["RootFS"]["Layers"]).unwrap(),
        layers
    );

    let saved = ts.path("saved.tar");
    run_ok(ts.lade().args(["save", "-o"]).arg(&saved).arg(&name));
    run_ok(docker().args(["rmi", &name]));
    run_ok(docker().args(["load", "-i"]).arg(&saved));
    assert_eq!(
        docker_inspect(&name, "{{.Id}}"),
        oci_id,
        "config changed in the round trip"
    );
    assert_eq!(docker_inspect(&name, "{{json .RootFS.Layers}}"), layers);
    assert_eq!(
        run_ok(docker().args(["run", "--rm", "--network=none", &name])),
        "hello\n"
    );
    assert_eq!(
        docker_fs(&name),
        fs_before,
        "filesystem changed in the round trip"
    );

    // skopeo's docker-archive (layer.tar symlinks to <diffid>.tar) keeps docker's config.
    let da = ts.path("da.tar");
    let name2 = format!("lade-store-test/{}:v2", unique("da"));
    run_ok(Command::new("skopeo").args([
        "copy",
        "-q",
        &format!("docker-daemon:{name}"),
        &format!("docker-archive:{}:{name2}", da.display()),
    ]));
    let ts2 = TestStore::new();
    assert_eq!(
        run_ok(ts2.lade().arg("load").arg("-i").arg(&da)).trim(),
        format!("Loaded image: {name2}")
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&run_ok(ts2.lade().args(["inspect", &name2]))).unwrap();
    assert_eq!(inspect[0]["Id"], oci_id.as_str());
    let _ = docker_id;
}

/// A store with one imported image, and its `lade save` archive bytes.
fn imported(ts: &TestStore, name: &str) -> Vec<u8> {
    let tar = ts.path("rootfs.tar");
    if !tar.exists() {
        base_rootfs_tar(&tar);
    }
    run_ok(ts.lade().arg("import").arg(&tar).arg(name));
    let out = ts.path(&format!("{}.tar", unique("saved")));
    run_ok(ts.lade().args(["save", "-o"]).arg(&out).arg(name));
    std::fs::read(out).unwrap()
}

#[test]
fn own_archives_and_compressed_archives_load() {
    let ts = TestStore::new();
    let archive = imported(&ts, "lade-store-test/own:1");
    let id = run_ok(ts.lade().args(["images", "-q", "--no-trunc"]))
        .trim()
        .to_string();
    for (label, bytes) in [
        ("plain", archive.clone()),
        ("gzip", {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&archive).unwrap();
            gz.finish().unwrap()
        }),
    ] {
        let other = TestStore::new();
        let p = other.path("in.tar");
        std::fs::write(&p, &bytes).unwrap();
        let out = run_ok(other.lade().arg("load").arg("-i").arg(&p));
        assert_eq!(out.trim(), "Loaded image: lade-store-test/own:1", "{label}");
        assert_eq!(
            run_ok(other.lade().args(["images", "-q", "--no-trunc"])).trim(),
            id,
            "{label}"
        );
        // And from standard input.
        let third = TestStore::new();
        let mut child = third
            .lade()
            .arg("load")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "Loaded image: lade-store-test/own:1"
        );
    }
}

/// Rebuilds a tar from (name, kind, data, link) entries, names written verbatim.
fn raw_tar(entries: &[(String, u8, Vec<u8>, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_old();
        {
            let raw = h.as_old_mut();
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
            raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::new(*kind));
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn entries_of(tar_bytes: &[u8]) -> Vec<(String, u8, Vec<u8>, String)> {
    let mut a = tar::Archive::new(tar_bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let kind = e.header().entry_type().as_byte();
            let link = e
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default();
            let mut d = Vec::new();
            e.read_to_end(&mut d).unwrap();
            (name, kind, d, link)
        })
        .collect()
}

/// A docker-archive with one image whose single layer is `layer`.
fn docker_archive_with_layer(
    layer: &[u8],
    extra: Vec<(String, u8, Vec<u8>, String)>,
    layer_name: &str,
) -> Vec<u8> {
    let diff = format!("sha256:{}", sha256_hex(layer));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff]},
    }))
    .unwrap();
    let chex = sha256_hex(&config);
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("{chex}.json"), "RepoTags": ["lade-store-test/bad:1"], "Layers": [layer_name],
    }]))
    .unwrap();
    let mut e = vec![
        (
            "l1/layer.tar".to_string(),
            b'0',
            layer.to_vec(),
            String::new(),
        ),
        (format!("{chex}.json"), b'0', config, String::new()),
        ("manifest.json".to_string(), b'0', manifest, String::new()),
    ];
    e.extend(extra);
    raw_tar(&e)
}

#[test]
fn bad_archives_are_refused_and_change_nothing() {
    let ts = TestStore::new();
    let good = imported(&ts, "lade-store-test/good:1");
    let before = ts.fingerprint();
    assert!(!before.is_empty());

    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    cases.push(("truncated", good[..good.len() / 2].to_vec(), "truncated"));
    cases.push((
        "truncated at a block boundary",
        good[..(good.len() / 2) / 512 * 512].to_vec(),
        "",
    ));
    // Corrupt: flip one byte inside the layer blob's data.
    let mut ents = entries_of(&good);
    let li = ents.iter().position(|e| e.2.len() > 100_000).unwrap();
    ents[li].2[50_000] ^= 0xff;
    cases.push(("corrupt layer", raw_tar(&ents), "digest mismatch"));
    // Wrong digest: a config edited after the fact no longer matches its name.
    let mut ents = entries_of(&good);
    let ci = ents
        .iter()
        .position(|e| e.2.starts_with(b"{\"architecture\""))
        .unwrap();
    ents[ci].2 = String::from_utf8(ents[ci].2.clone())
        .unwrap()
        .replace("amd64", "arm64")
        .into_bytes();
    cases.push(("wrong config digest", raw_tar(&ents), "digest mismatch"));
    // Layer whose diffID is not the one the config lists.
    let layer = raw_tar(&[("ok".to_string(), b'0', b"x".to_vec(), String::new())]);
    let mut arch = docker_archive_with_layer(&layer, vec![], "l1/layer.tar");
    let other_layer = raw_tar(&[("other".to_string(), b'0', b"y".to_vec(), String::new())]);
    let mut e = entries_of(&arch);
    e[0].2 = other_layer;
    arch = raw_tar(&e);
    cases.push(("wrong layer diffID", arch, "digest mismatch"));
    // Path traversal inside a layer.
    let evil = raw_tar(&[("../../evil".to_string(), b'0', b"x".to_vec(), String::new())]);
    cases.push((
        "traversing layer",
        docker_archive_with_layer(&evil, vec![], "l1/layer.tar"),
        "outside the layer root",
    ));
    let evil_link = raw_tar(&[(
        "x".to_string(),
        b'1',
        vec![],
        "../../../etc/passwd".to_string(),
    )]);
    cases.push((
        "traversing hardlink",
        docker_archive_with_layer(&evil_link, vec![], "l1/layer.tar"),
        "outside the layer root",
    ));
    // Path traversal in the archive itself.
    cases.push((
        "traversing entry",
        docker_archive_with_layer(
            &layer,
            vec![("../../x".to_string(), b'0', b"x".to_vec(), String::new())],
            "l1/layer.tar",
        ),
        "outside the archive",
    ));
    cases.push((
        "traversing manifest path",
        docker_archive_with_layer(&layer, vec![], "../../../etc/passwd"),
        "outside the archive",
    ));
    cases.push((
        "traversing symlink",
        docker_archive_with_layer(
            &layer,
            vec![(
                "l2/layer.tar".to_string(),
                b'2',
                vec![],
                "../../../etc/passwd".to_string(),
            )],
            "l2/layer.tar",
        ),
        "outside the archive",
    ));
    cases.push((
        "not an archive",
        b"hello world".repeat(100),
        "not a valid image archive",
    ));

    for (label, bytes, expect) in cases {
        let p = ts.path("bad.tar");
        std::fs::write(&p, &bytes).unwrap();
        let err = run_fail(ts.lade().arg("load").arg("-i").arg(&p));
        assert!(err.contains(expect), "{label}: unexpected error: {err}");
        assert!(err.starts_with("error: "), "{label}: {err}");
        assert_eq!(ts.fingerprint(), before, "{label}: the store changed");
        assert_eq!(ts.temp_entries(), 0, "{label}: temp files left behind");
    }

    // Decompression bomb: a small gzip layer that inflates past the cap.
    let zeros = raw_tar(&[("zeros".to_string(), b'0', vec![0u8; 4 << 20], String::new())]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&zeros).unwrap();
    let bomb_layer = gz.finish().unwrap();
    let _ = bomb_layer;
    let p = ts.path("bomb.tar");
    std::fs::write(
        &p,
        docker_archive_with_layer(&zeros, vec![], "l1/layer.tar"),
    )
    .unwrap();
    let err = run_fail(
        ts.lade()
            .env("LADE_MAX_LAYER_BYTES", "1000000")
            .arg("load")
            .arg("-i")
            .arg(&p),
    );
    assert!(err.contains("exceeds the limit of 1000000 bytes"), "{err}");
    assert_eq!(ts.fingerprint(), before, "bomb: the store changed");
    let ok = run_ok(ts.lade().args(["system", "check", "--verify"]));
    assert!(ok.contains("store is consistent"), "{ok}");
}

/// Writes `n` bytes of deterministic pseudo-random (incompressible) data.
pub fn random_file(path: &Path, n: usize, seed: u64) {
    let mut x = seed | 1;
    let mut buf = Vec::with_capacity(n);
    while buf.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.truncate(n);
    std::fs::write(path, buf).unwrap();
}

#[test]
fn kill_9_during_load_leaves_a_usable_store() {
    let src = TestStore::new();
    let dir = src.path("rootfs");
    base_rootfs_dir(&dir);
    random_file(&dir.join("big1"), 24 << 20, 1);
    random_file(&dir.join("big2"), 8 << 20, 2);
    run_ok(
        src.lade()
            .arg("import")
            .arg(&dir)
            .arg("lade-store-test/kill:1"),
    );
    let archive = src.path("kill.tar");
    run_ok(
        src.lade()
            .args(["save", "-o"])
            .arg(&archive)
            .arg("lade-store-test/kill:1"),
    );

    let ts = TestStore::new();
    for i in 0..6u64 {
        let mut child = ts
            .lade()
            .arg("load")
            .arg("-i")
            .arg(&archive)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Fault injection (not synchronisation): kill at varying points of the load.
        std::thread::sleep(std::time::Duration::from_millis(i * 37 % 200));
        let _ = child.kill();
        let _ = child.wait();
        let check = run_ok(ts.lade().args(["system", "check"]));
        assert!(
            check.contains("store is consistent"),
            "after kill {i}: {check}"
        );
        // Whatever happened, names only point at complete images.
        let imgs = run_ok(ts.lade().args(["images", "--format", "json"]));
        for line in imgs.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            run_ok(ts.lade().args(["inspect", v["ID"].as_str().unwrap()]));
        }
    }
    assert_eq!(
        run_ok(ts.lade().arg("load").arg("-i").arg(&archive)).trim(),
        "Loaded image: lade-store-test/kill:1"
    );
    assert!(run_ok(ts.lade().arg("images")).contains("lade-store-test/kill"));
    assert!(run_ok(ts.lade().args(["system", "check", "--verify"])).contains("store is consistent"));
    run_ok(ts.lade().arg("prune"));
    assert_eq!(ts.temp_entries(), 0);
    // Saving again gives the identical archive.
    let again = ts.path("again.tar");
    run_ok(
        ts.lade()
            .args(["save", "-o"])
            .arg(&again)
            .arg("lade-store-test/kill:1"),
    );
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&archive).unwrap()
    );
}

#[test]
fn concurrent_loads_of_one_archive() {
    let ts = TestStore::new();
    let archive = imported(&ts, "lade-store-test/conc:1");
    let p = ts.path("conc.tar");
    std::fs::write(&p, &archive).unwrap();
    let target = TestStore::new();
    let children: Vec<_> = (0..4)
        .map(|_| {
            target
                .lade()
                .arg("load")
                .arg("-i")
                .arg(&p)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
    }
    assert!(
        run_ok(target.lade().args(["system", "check", "--verify"])).contains("store is consistent")
    );
    assert_eq!(
        run_ok(target.lade().args(["images", "-q"])).lines().count(),
        1
    );
}

#[test]
fn import_tag_rmi_inspect_history_prune() {
    let ts = TestStore::new();
    let dir = ts.path("rootfs");
    base_rootfs_dir(&dir);
    let id = run_ok(
        ts.lade()
            .args([
                "import",
                "--change",
                r#"CMD ["/bin/sh", "-c", "echo hi"]"#,
                "--change",
                "ENV A=1",
                "--change",
                "WORKDIR /home/lade",
                "-m",
                "base image",
            ])
            .arg(&dir)
            .arg("lade-store-test/imp:1"),
    );
    let id = id.trim().to_string();
    assert!(id.starts_with("sha256:"), "{id}");
    let v: serde_json::Value = serde_json::from_str(&run_ok(
        ts.lade().args(["inspect", "lade-store-test/imp:1"]),
    ))
    .unwrap();
    assert_eq!(v[0]["Id"], id.as_str());
    assert_eq!(
        v[0]["Config"]["Cmd"],
        serde_json::json!(["/bin/sh", "-c", "echo hi"])
    );
    assert_eq!(v[0]["Config"]["Env"], serde_json::json!(["A=1"]));
    assert_eq!(v[0]["Config"]["WorkingDir"], "/home/lade");
    assert_eq!(v[0]["Comment"], "base image");
    assert_eq!(v[0]["Os"], "linux");
    assert!(v[0]["Size"].as_u64().unwrap() > 100_000);
    assert_eq!(v[0]["RootFS"]["Layers"].as_array().unwrap().len(), 1);

    run_ok(
        ts.lade()
            .args(["tag", "lade-store-test/imp:1", "localhost:5000/imp:2"]),
    );
    let json = run_ok(ts.lade().args(["images", "--format", "json"]));
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .any(|r| r["Repository"] == "localhost:5000/imp" && r["Tag"] == "2"));
    let table = run_ok(ts.lade().arg("images"));
    assert!(table.starts_with("REPOSITORY"), "{table}");
    let hist = run_ok(ts.lade().args(["history", "lade-store-test/imp:1"]));
    assert!(
        hist.contains("lade import") && hist.contains("base image"),
        "{hist}"
    );

    let err = run_fail(ts.lade().args(["rmi", "nothere"]));
    assert!(err.contains("no such image"), "{err}");
    let out = run_ok(ts.lade().args(["rmi", "lade-store-test/imp:1"]));
    assert_eq!(out.trim(), "Untagged: lade-store-test/imp:1");
    // Nothing is unreferenced yet: the other name keeps the image.
    assert!(run_ok(ts.lade().args(["prune", "--dry-run"])).contains("Would remove 0 blobs"));
    let out = run_ok(ts.lade().args(["rmi", "localhost:5000/imp:2"]));
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    let out = run_ok(ts.lade().arg("prune"));
    assert!(out.contains("Removed 2 blobs, 1 layer records"), "{out}");
    assert!(!out.contains("reclaimed space: 0B"), "{out}");
    assert_eq!(run_ok(ts.lade().args(["images", "-q"])), "");
    assert!(run_ok(ts.lade().args(["system", "check"])).contains("images: 0, blobs: 0"));
}

#[test]
fn lade_root_names_the_store_and_root_flag_wins() {
    let ts = TestStore::new();
    let dir = ts.path("tiny");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello"), "hi\n").unwrap();
    // A relative LADE_ROOT is taken from the current directory.
    let id = run_ok(
        lade()
            .env("LADE_ROOT", "rel/store")
            .current_dir(ts.dir.path())
            .arg("import")
            .arg(&dir)
            .arg("lade-store-test/envroot:1"),
    );
    let store = ts.path("rel/store");
    assert!(
        store.join("blobs/sha256").is_dir() && store.join("refs.json").is_file(),
        "no store made at $LADE_ROOT {}",
        store.display()
    );
    // Any command with the same LADE_ROOT (here absolute, from elsewhere) sees the image.
    let listed = run_ok(lade().env("LADE_ROOT", &store).current_dir("/").args([
        "images",
        "-q",
        "--no-trunc",
    ]));
    assert_eq!(listed.trim(), id.trim());
    // --root wins over LADE_ROOT.
    let other = ts.path("other");
    let listed = run_ok(
        lade()
            .env("LADE_ROOT", &store)
            .arg("--root")
            .arg(&other)
            .args(["images", "-q"]),
    );
    assert_eq!(listed, "");
    assert!(other.join("blobs/sha256").is_dir());
}
