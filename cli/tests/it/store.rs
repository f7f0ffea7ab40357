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
    assert_eq!(
        inspect[0]["Created"],
        docker_inspect(&app.name, "{{.Created}}")
    );
    // Loaded, not tagged by a user: docker's zero time, as `docker load` gives.
    assert_eq!(
        inspect[0]["Metadata"]["LastTagTime"],
        "0001-01-01T00:00:00Z"
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
    assert_eq!(
        docker_inspect(&name, "{{.Metadata.LastTagTime}}"),
        "0001-01-01 00:00:00 +0000 UTC"
    );
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

/// Whole seconds since the Unix epoch of an RFC 3339 UTC time (`...Z`).
fn epoch_secs(t: &str) -> i64 {
    let out = run_ok(Command::new("date").args(["-u", "-d", t, "+%s"]));
    out.trim().parse().unwrap()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn inspect_prints_what_it_found_and_names_what_it_did_not_like_docker() {
    let ts = TestStore::new();
    let tar = ts.path("rootfs.tar");
    base_rootfs_tar(&tar);
    let name = format!("lade-store-test/{}:1", unique("insp"));
    let missing = format!("lade-store-test/{}:1", unique("missing"));
    let t0 = now_secs();
    run_ok(ts.lade().arg("import").arg(&tar).arg(&name));
    let _img = DockerImage { name: name.clone() };
    run_ok(docker().arg("import").arg(&tar).arg(&name));

    let both = |cmd: &mut Command| {
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        (
            out.status.code(),
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for args in [
        vec![name.as_str(), missing.as_str()],
        vec![missing.as_str(), name.as_str(), missing.as_str()],
        vec![missing.as_str()],
    ] {
        let (lcode, lout, lerr) = both(ts.lade().arg("inspect").args(&args));
        let (dcode, dout, derr) = both(docker().arg("inspect").args(&args));
        assert_eq!(lcode, dcode, "{args:?}: exit status");
        assert_eq!(lcode, Some(1));
        assert_eq!(lerr, derr, "{args:?}: stderr");
        let ids = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|i| i["RepoTags"][0].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(ids(&lout), ids(&dout), "{args:?}: images found");
    }

    // A malformed name gets the reason (docker only says "No such object"), found images
    // are still printed.
    let out = ts
        .lade()
        .args(["inspect", &name, "Not A Reference"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: invalid reference \"Not A Reference\""),
        "{err}"
    );

    // Created is the config's; LastTagTime is when a user last named the image.
    let v: serde_json::Value =
        serde_json::from_str(&run_ok(ts.lade().args(["inspect", &name]))).unwrap();
    let created = v[0]["Created"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() > 20, "{created}");
    let cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            ts.root.join("blobs/sha256").join(
                v[0]["Id"]
                    .as_str()
                    .unwrap()
                    .strip_prefix("sha256:")
                    .unwrap(),
            ),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(v[0]["Created"], cfg["created"]);
    let tagged = v[0]["Metadata"]["LastTagTime"]
        .as_str()
        .unwrap()
        .to_string();
    let (c, t) = (epoch_secs(created), epoch_secs(&tagged));
    assert!(t0 <= c && c <= t && t <= now_secs(), "{created} {tagged}");
    let other = format!("lade-store-test/{}:2", unique("insp"));
    run_ok(ts.lade().args(["tag", &name, &other]));
    let v: serde_json::Value =
        serde_json::from_str(&run_ok(ts.lade().args(["inspect", &name]))).unwrap();
    let retagged = v[0]["Metadata"]["LastTagTime"].as_str().unwrap();
    assert!(
        retagged != tagged && epoch_secs(retagged) >= t,
        "{retagged} after {tagged}"
    );
    // Saved and loaded elsewhere, it was not tagged there: docker's zero time, as docker
    // load gives.
    let archive = ts.path("insp.tar");
    run_ok(ts.lade().args(["save", "-o"]).arg(&archive).arg(&name));
    let ts2 = TestStore::new();
    run_ok(ts2.lade().arg("load").arg("-i").arg(&archive));
    let v: serde_json::Value =
        serde_json::from_str(&run_ok(ts2.lade().args(["inspect", &name]))).unwrap();
    assert_eq!(v[0]["Metadata"]["LastTagTime"], "0001-01-01T00:00:00Z");
    assert_eq!(v[0]["Created"], created);
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

#[test]
fn save_to_stdout_is_the_file_archive_and_docker_loads_it() {
    let ts = TestStore::new();
    let name = format!("lade-store-test/{}:1", unique("stdout"));
    let tar = ts.path("rootfs.tar");
    base_rootfs_tar(&tar);
    run_ok(
        ts.lade()
            .args(["import", "--change", r#"CMD ["echo", "from stdout"]"#])
            .arg(&tar)
            .arg(&name),
    );
    let file = ts.path("saved.tar");
    run_ok(ts.lade().args(["save", "-o"]).arg(&file).arg(&name));
    let out = ts
        .lade()
        .args(["save", &name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_file = std::fs::read(&file).unwrap();
    assert!(from_file.len() > 100_000);
    assert!(
        out.stdout == from_file,
        "stdout archive ({} bytes) differs from the -o archive ({} bytes)",
        out.stdout.len(),
        from_file.len()
    );

    // Piped straight into `docker load`, the image runs.
    let _img = DockerImage { name: name.clone() };
    let mut save = ts
        .lade()
        .args(["save", &name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let load = docker()
        .arg("load")
        .stdin(Stdio::from(save.stdout.take().unwrap()))
        .output()
        .unwrap();
    assert!(
        save.wait().unwrap().success(),
        "lade save to the pipe failed"
    );
    assert!(
        load.status.success(),
        "docker load: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    let said = String::from_utf8_lossy(&load.stdout);
    assert!(said.contains(&format!("Loaded image: {name}")), "{said}");
    let ran = run_ok(docker().args(["run", "--rm", "--network=none", &name]));
    assert_eq!(ran, "from stdout\n");
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

/// A docker-archive with one image whose single layer is `layer` (an uncompressed tar).
fn docker_archive_with_layer(
    layer: &[u8],
    extra: Vec<(String, u8, Vec<u8>, String)>,
    layer_name: &str,
) -> Vec<u8> {
    docker_archive(
        layer,
        &format!("sha256:{}", sha256_hex(layer)),
        extra,
        layer_name,
    )
}

/// A docker-archive with one image whose single layer is the blob `layer` (compressed or not)
/// with diffID `diff`.
fn docker_archive(
    layer: &[u8],
    diff: &str,
    extra: Vec<(String, u8, Vec<u8>, String)>,
    layer_name: &str,
) -> Vec<u8> {
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
    // A JSON document over the 16 MiB cap is refused as such, not misread as a layer.
    let mut big = b"[{\"Config\":\"".to_vec();
    big.resize((16 << 20) + 100, b'x');
    big.extend_from_slice(b"\"}]");
    let mut e = entries_of(&docker_archive_with_layer(&layer, vec![], "l1/layer.tar"));
    let mi = e.iter().position(|e| e.0 == "manifest.json").unwrap();
    e[mi].2 = big;
    cases.push((
        "oversized manifest.json",
        raw_tar(&e),
        "JSON document manifest.json in the archive exceeds the limit of 16777216 bytes",
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

    // Decompression bombs, against a lowered per-layer cap: a small gzip or zstd layer that
    // inflates past it, a plain layer over it, and a whole archive gzipped around a layer over it.
    let zeros = raw_tar(&[("zeros".to_string(), b'0', vec![0u8; 4 << 20], String::new())]);
    let zeros_diff = format!("sha256:{}", sha256_hex(&zeros));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&zeros).unwrap();
    let gzip_layer = gz.finish().unwrap();
    let zstd_layer = zstd::encode_all(&zeros[..], 19).unwrap();
    assert!(gzip_layer.len() < 64 << 10 && zstd_layer.len() < 64 << 10);
    let plain = docker_archive_with_layer(&zeros, vec![], "l1/layer.tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&plain).unwrap();
    let gzip_archive = gz.finish().unwrap();
    assert!(gzip_archive.len() < 64 << 10);
    let bombs = [
        (
            "gzip layer",
            docker_archive(&gzip_layer, &zeros_diff, vec![], "l1/layer.tar"),
        ),
        (
            "zstd layer",
            docker_archive(&zstd_layer, &zeros_diff, vec![], "l1/layer.tar"),
        ),
        ("plain layer", plain),
        ("gzip archive", gzip_archive),
    ];
    for (label, bytes) in bombs {
        let p = ts.path("bomb.tar");
        std::fs::write(&p, &bytes).unwrap();
        let err = run_fail(
            ts.lade()
                .env("LADE_MAX_LAYER_BYTES", "1000000")
                .arg("load")
                .arg("-i")
                .arg(&p),
        );
        assert!(
            err.starts_with("error: ")
                && err.contains("exceeds the limit of 1000000 bytes")
                && err.contains("set LADE_MAX_LAYER_BYTES to a higher number"),
            "{label}: {err}"
        );
        assert_eq!(ts.fingerprint(), before, "{label}: the store changed");
        assert_eq!(ts.temp_entries(), 0, "{label}: temp files left behind");
        // Under the default cap the same archive is a valid one.
        let other = TestStore::new();
        let out = run_ok(other.lade().arg("load").arg("-i").arg(&p));
        assert_eq!(out.trim(), "Loaded image: lade-store-test/bad:1", "{label}");
    }
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

/// The bytes of a `human_size` figure (`3.15MB`, `0B`).
fn parse_size(s: &str) -> f64 {
    let s = s.trim();
    let at = s.find(|c: char| c.is_ascii_alphabetic()).unwrap();
    let (n, unit) = s.split_at(at);
    let mult = match unit {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        other => panic!("unit {other}"),
    };
    n.parse::<f64>().unwrap() * mult
}

fn reclaimed(out: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with("Total reclaimed space: ") || l.starts_with("Reclaimable space: "))
        .unwrap_or_else(|| panic!("no space line in {out}"));
    parse_size(line.rsplit(": ").next().unwrap())
}

#[test]
fn prune_counts_everything_it_removes() {
    let ts = TestStore::new();
    imported(&ts, "lade-store-test/keep:1");
    // What `prune --all` removes besides the store's blobs: cache mounts and stat caches, and
    // what `run --rm` left in the container trash (which every prune empties).
    let fill = |rel: &str, seed: u64| {
        let p = ts.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        random_file(&p, 1 << 20, seed);
    };
    fill("containers/.trash/0123/upper/big", 1);
    let mib = f64::from(1u32 << 20);
    let dry = run_ok(ts.lade().args(["prune", "--dry-run"]));
    assert!(reclaimed(&dry) >= mib, "{dry}");
    let out = run_ok(ts.lade().arg("prune"));
    assert!(
        reclaimed(&out) >= mib && reclaimed(&out) < 2.0 * mib,
        "{out}"
    );
    assert!(!ts.root.join("containers/.trash/0123").exists());

    fill("containers/.trash/4567/upper/big", 2);
    fill("cachemounts/abc/big", 3);
    fill("statcache/index", 4);
    let dry = run_ok(ts.lade().args(["prune", "--all", "--dry-run"]));
    assert!(reclaimed(&dry) >= 3.0 * mib, "{dry}");
    assert!(ts.root.join("cachemounts/abc/big").exists());
    let out = run_ok(ts.lade().args(["prune", "--all"]));
    assert!(
        reclaimed(&out) >= 3.0 * mib && reclaimed(&out) < 4.0 * mib,
        "{out}"
    );
    for gone in ["containers/.trash/4567", "cachemounts", "statcache"] {
        assert!(!ts.root.join(gone).exists(), "{gone} is still there");
    }
    // The image is still there, and a second prune finds nothing.
    assert!(run_ok(ts.lade().arg("images")).contains("lade-store-test/keep"));
    let again = run_ok(ts.lade().args(["prune", "--all"]));
    assert_eq!(reclaimed(&again), 0.0, "{again}");
}

/// The `Config` fields `--change` can set, from an inspect's `Config`, with docker's `null`
/// and Lade's absent field alike.
fn change_fields(config: &serde_json::Value) -> BTreeMap<&'static str, serde_json::Value> {
    let mut out = BTreeMap::new();
    for k in [
        "Cmd",
        "Entrypoint",
        "Env",
        "ExposedPorts",
        "Healthcheck",
        "Labels",
        "OnBuild",
        "StopSignal",
        "User",
        "Volumes",
        "WorkingDir",
    ] {
        let v = config.get(k).cloned().unwrap_or(serde_json::Value::Null);
        if !v.is_null() && v != "" {
            out.insert(k, v);
        }
    }
    out
}

#[test]
fn import_changes_give_the_config_docker_import_gives() {
    let ts = TestStore::new();
    let tar = ts.path("rootfs.tar");
    base_rootfs_tar(&tar);
    let name = format!("lade-store-test/{}:1", unique("change"));
    let _img = DockerImage { name: name.clone() };
    let cases: &[&[&str]] = &[
        &[
            r#"ENV A=1 B="two words""#,
            "ENV C $A",
            "WORKDIR $A/x",
            "WORKDIR rel/../y",
            "EXPOSE 8000-8002 53/UDP",
            "HEALTHCHECK --interval=5s --retries=2 CMD wget -q localhost",
            "ONBUILD RUN echo hi",
            "onbuild copy a b",
            "LABEL l=$A other=\"x y\"",
            r#"VOLUME ["/v1", "/v2"]"#,
            "USER $A:2",
            "CMD echo hi",
        ],
        &[r#"CMD ["a"]"#, r#"ENTRYPOINT ["e", "f"]"#],
        &[r#"ENTRYPOINT ["e"]"#, "CMD b"],
        &["ENTRYPOINT e x", "HEALTHCHECK NONE"],
        &["ENTRYPOINT []", "CMD []", "VOLUME /a /b", "LABEL a b c"],
        &[
            "HEALTHCHECK --interval=1m --timeout=3s --start-period=2s CMD [\"/bin/true\"]",
            "EXPOSE 80 80/tcp 9/sctp",
        ],
    ];
    for changes in cases {
        let with = |cmd: &mut Command| {
            for c in *changes {
                cmd.arg("--change").arg(c);
            }
            cmd.arg(&tar).arg(&name);
        };
        let mut d = docker();
        d.arg("import");
        with(&mut d);
        run_ok(&mut d);
        let mut l = ts.lade();
        l.arg("import");
        with(&mut l);
        run_ok(&mut l);
        let dv: serde_json::Value =
            serde_json::from_str(&run_ok(docker().args(["inspect", &name]))).unwrap();
        let lv: serde_json::Value =
            serde_json::from_str(&run_ok(ts.lade().args(["inspect", &name]))).unwrap();
        let want = change_fields(&dv[0]["Config"]);
        assert!(!want.is_empty(), "{changes:?}: {dv}");
        assert_eq!(change_fields(&lv[0]["Config"]), want, "{changes:?}");
    }
    // STOPSIGNAL (newer docker accepts it, the 20.10 daemon here does not).
    run_ok(
        ts.lade()
            .args(["import", "-c", "STOPSIGNAL SIGINT"])
            .arg(&tar)
            .arg(&name),
    );
    let v: serde_json::Value =
        serde_json::from_str(&run_ok(ts.lade().args(["inspect", &name]))).unwrap();
    assert_eq!(v[0]["Config"]["StopSignal"], "SIGINT");

    // What docker refuses, Lade refuses, saying why.
    let before = ts.fingerprint();
    for (change, why) in [
        ("RUN make", "RUN cannot be used with --change"),
        ("FROM scratch", "FROM cannot be used with --change"),
        ("ENV =x", "ENV names can not be blank"),
        ("EXPOSE 70000", "invalid containerPort: 70000"),
        ("EXPOSE 80/xyz", "invalid proto: xyz"),
        ("ONBUILD ONBUILD RUN x", "ONBUILD"),
        ("WORKDIR", "WORKDIR"),
    ] {
        let derr = run_fail(docker().args(["import", "-c", change]).arg(&tar).arg(&name));
        assert!(derr.contains("Error"), "{change}: {derr}");
        let err = run_fail(
            ts.lade()
                .args(["import", "-c", change])
                .arg(&tar)
                .arg(&name),
        );
        assert!(
            err.starts_with(&format!("error: invalid --change {change:?}: ")) && err.contains(why),
            "{change}: {err}"
        );
    }
    assert_eq!(
        ts.fingerprint(),
        before,
        "a refused --change changed the store"
    );
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
