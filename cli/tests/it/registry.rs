//! `lade push` / `lade pull` / pull-on-run / `FROM` a registry, end to end: the real binary
//! against Debian's `docker-registry` (started per test by `lade_registry::testing`), with
//! dockerd and skopeo as the peers. `lade run` and `lade build` start real sandboxes: run the
//! tests as root.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use lade_registry::testing::{Fault, FaultProxy, TestRegistry};

use crate::common::*;
use crate::store::{app_dockerfile, docker_fs, overlay_fs};

/// `lade --root ROOT` with its config dirs in `home` (no credentials unless a test writes
/// some), trusting `reg`'s CA when it has one.
fn lade_in(ts: &TestStore, home: &Path, reg: Option<&TestRegistry>) -> Command {
    let mut c = ts.lade();
    c.env("HOME", home)
        .env("LADE_CONFIG", home.join("lade"))
        .env("DOCKER_CONFIG", home.join("docker"))
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("LADE_INSECURE_REGISTRIES");
    match reg.and_then(TestRegistry::certs_dir) {
        Some(d) => c.env("LADE_CERTS_DIR", d),
        None => c.env_remove("LADE_CERTS_DIR"),
    };
    c
}

/// `TAG: digest: sha256:... size: N` -> the digest.
fn pushed_digest(out: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.contains(": digest: sha256:"))
        .unwrap_or_else(|| panic!("no digest line in {out}"));
    let d = line.split(": digest: ").nth(1).unwrap();
    d.split_whitespace().next().unwrap().to_string()
}

/// `lade import` of the busybox rootfs, with a CMD, named `name`.
fn import_base(ts: &TestStore, name: &str) {
    let tar = ts.path("rootfs.tar");
    if !tar.exists() {
        base_rootfs_tar(&tar);
    }
    run_ok(
        ts.lade()
            .args([
                "import",
                "--change",
                r#"CMD ["/bin/sh", "-c", "echo hello from lade"]"#,
            ])
            .arg(&tar)
            .arg(name),
    );
}

/// A 5-layer BuildKit-built image (busybox base, 3 RUN, WORKDIR) loaded into the store from `docker save` and named `name`
/// there. Returns the docker image (removed on drop) it came from.
fn load_docker_app(ts: &TestStore, name: &str) -> (DockerImage, DockerImage) {
    let base = docker_base_image(ts.dir.path());
    let app = docker_build(
        ts.dir.path(),
        &format!("lade-pp-test/{}:1", unique("app")),
        &app_dockerfile(&base.name),
    );
    let archive = ts.path(&unique("app.tar"));
    run_ok(docker().args(["save", "-o"]).arg(&archive).arg(&app.name));
    run_ok(ts.lade().args(["load", "-i"]).arg(&archive));
    run_ok(ts.lade().args(["tag", &app.name, name]));
    (base, app)
}

/// Blob uploads completed into `repo` (the final `PUT` of an upload session) so far.
fn uploads_to(reg: &TestRegistry, repo: &str) -> usize {
    let prefix = format!("/v2/{repo}/blobs/uploads/");
    reg.access_log()
        .iter()
        .filter(|e| e.method == "PUT" && e.status == 201 && e.path.starts_with(&prefix))
        .count()
}

fn blob_gets(reg: &TestRegistry) -> usize {
    reg.access_log()
        .iter()
        .filter(|e| e.method == "GET" && e.path.contains("/blobs/sha256:"))
        .count()
}

/// The store is consistent and holds no temp file.
fn assert_store_ok(ts: &TestStore) {
    let out = run_ok(ts.lade().args(["system", "check", "--verify"]));
    assert!(out.contains("store is consistent"), "{out}");
    assert_eq!(ts.temp_entries(), 0, "temp files left in the store");
}

/// The layer digests of a pushed manifest, via skopeo.
fn remote_layers(reference: &str) -> Vec<String> {
    let raw = run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{reference}"),
    ]));
    let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn blob_file(reg: &TestRegistry, digest: &str) -> PathBuf {
    reg.blob_data_path(&lade_registry::Digest::parse(digest).unwrap())
}

/// A build context in the scratch space holding `dockerfile` and `files`.
fn context(ts: &TestStore, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
    let ctx = ts.path(&unique("ctx"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    for (name, text) in files {
        std::fs::write(ctx.join(name), text).unwrap();
    }
    ctx
}

/// `docker push` of the BuildKit-built app image (`app_dockerfile`) as `target`; returns the
/// pushed manifest digest. The local docker images go when the guards drop.
fn docker_push_app(ts: &TestStore, target: &str) -> (String, [DockerImage; 3]) {
    let base = docker_base_image(ts.dir.path());
    let app = docker_build(
        ts.dir.path(),
        &format!("lade-pp-test/{}:1", unique("app")),
        &app_dockerfile(&base.name),
    );
    run_ok(docker().args(["tag", &app.name, target]));
    let tagged = DockerImage {
        name: target.to_string(),
    };
    let digest = pushed_digest(&run_ok(docker().args(["push", target])));
    (digest, [tagged, app, base])
}

/// What `APP_CHECK` prints in the app image (`app_dockerfile`): its WORKDIR and ENV, the
/// opaque dir's content, the deleted `/etc/group`, an owner set by a RUN.
const APP_CHECK: &str =
    "pwd; echo $FOO; ls /opq/d; test -e /etc/group || echo no-group; stat -c %u:%g /app/big";
const APP_CHECK_OUT: &str = "/app\nbar\ny\nno-group\n1000:1000\n";

/// `lade run` with stdin from /dev/null: (status, stdout, stderr).
fn lade_run(mut c: Command) -> (Option<i32>, String, String) {
    let out = c.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn pushed_lade_images_inspect_in_skopeo_and_run_in_docker() {
    require_tool("skopeo", "skopeo");
    let reg = TestRegistry::plain();
    let ts = TestStore::new();
    let home = ts.path("home");
    let base = format!("{}/lade-pp/base:1", reg.host());
    let app = format!("{}/lade-pp/app:1", reg.host());
    import_base(&ts, &base);
    let (_dbase, dapp) = load_docker_app(&ts, &app);

    let out = run_ok(lade_in(&ts, &home, None).args(["push", &base]));
    assert!(out.starts_with(&format!(
        "The push refers to repository [{}/lade-pp/base]",
        reg.host()
    )));
    assert!(out.contains(": Pushed"), "{out}");
    let base_digest = pushed_digest(&out);
    let out = run_ok(lade_in(&ts, &home, None).args(["push", &app]));
    assert!(
        out.contains("1: digest: sha256:") && out.contains(" size: "),
        "{out}"
    );
    let app_digest = pushed_digest(&out);

    let inspect = |r: &str| -> serde_json::Value {
        serde_json::from_str(&run_ok(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{r}"),
        ])))
        .unwrap()
    };
    let s = inspect(&app);
    assert_eq!(s["Digest"], app_digest);
    assert_eq!(s["Layers"].as_array().unwrap().len(), 5, "{s}");
    assert_eq!(s["Architecture"], "amd64");
    assert_eq!(s["Os"], "linux");
    assert_eq!(inspect(&base)["Digest"], base_digest);

    // docker pulls and runs them; the app's filesystem and config are the ones docker built
    // (same config bytes, so the same image ID).
    let want_fs = docker_fs(&dapp.name);
    let want_id = docker_inspect(&dapp.name, "{{.Id}}");
    let want_config = docker_inspect(&dapp.name, "{{json .Config}}");
    drop(dapp);
    let pulled_app = DockerImage { name: app.clone() };
    let pulled_base = DockerImage { name: base.clone() };
    run_ok(docker().args(["pull", "-q", &app]));
    run_ok(docker().args(["pull", "-q", &base]));
    assert_eq!(docker_inspect(&pulled_app.name, "{{.Id}}"), want_id);
    assert_eq!(
        docker_inspect(&pulled_app.name, "{{json .Config}}"),
        want_config
    );
    assert_eq!(docker_fs(&pulled_app.name), want_fs);
    let ran = run_ok(docker().args(["run", "--rm", "--network=none", &app]));
    assert_eq!(ran, "hello\n");
    let ran = run_ok(docker().args(["run", "--rm", "--network=none", &base]));
    assert_eq!(ran, "hello from lade\n");
    assert_eq!(
        docker_inspect(&pulled_base.name, "{{index .RepoDigests 0}}"),
        format!("{}/lade-pp/base@{base_digest}", reg.host())
    );
}

#[test]
fn an_image_pushed_by_docker_pulls_into_an_empty_store() {
    let reg = TestRegistry::plain();
    let ts = TestStore::new();
    let home = ts.path("home");
    let base = docker_base_image(ts.dir.path());
    let app = docker_build(
        ts.dir.path(),
        &format!("lade-pp-test/{}:1", unique("app")),
        &app_dockerfile(&base.name),
    );
    let target = format!("{}/lade-pp/fromdocker:1", reg.host());
    run_ok(docker().args(["tag", &app.name, &target]));
    let _tagged = DockerImage {
        name: target.clone(),
    };
    let pushed = run_ok(docker().args(["push", &target]));
    let docker_digest = pushed_digest(&pushed);

    let out = run_ok(lade_in(&ts, &home, None).args(["pull", &target]));
    assert!(
        out.contains(&format!("Digest: {docker_digest}"))
            && out.contains(&format!("Status: Downloaded newer image for {target}"))
            && out.ends_with(&format!("{target}\n")),
        "{out}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&run_ok(ts.lade().args(["inspect", &target]))).unwrap();
    assert_eq!(inspect[0]["Id"], docker_inspect(&app.name, "{{.Id}}"));
    assert_eq!(
        inspect[0]["RepoDigests"][0],
        format!("{}/lade-pp/fromdocker@{docker_digest}", reg.host())
    );
    assert_eq!(overlay_fs(&ts, &target), docker_fs(&app.name));
    assert_store_ok(&ts);

    // lade run of the pulled image: its CMD, and the filesystem and config docker built.
    let (code, out, err) = lade_run({
        let mut c = lade_in(&ts, &home, None);
        c.args(["run", "--rm", &target]);
        c
    });
    assert_eq!((code, out.as_str()), (Some(0), "hello\n"), "{err}");
    assert!(!err.contains("Unable to find image"), "{err}");
    let (code, out, err) = lade_run({
        let mut c = lade_in(&ts, &home, None);
        c.args(["run", "--rm", &target, "sh", "-c", APP_CHECK]);
        c
    });
    assert_eq!((code, out.as_str()), (Some(0), APP_CHECK_OUT), "{err}");

    // A second pull downloads nothing.
    let gets = blob_gets(&reg);
    let out = run_ok(lade_in(&ts, &home, None).args(["pull", &target]));
    assert!(
        out.contains(&format!("Status: Image is up to date for {target}")),
        "{out}"
    );
    assert_eq!(blob_gets(&reg), gets);
}

#[test]
fn a_second_repository_mounts_and_repeated_transfers_send_nothing() {
    let reg = TestRegistry::plain();
    let ts = TestStore::new();
    let home = ts.path("home");
    let one = format!("{}/lade-pp/one:1", reg.host());
    let two = format!("{}/lade-pp/two:1", reg.host());
    let (_b, _a) = load_docker_app(&ts, &one);

    let out = run_ok(lade_in(&ts, &home, None).args(["push", &one]));
    assert_eq!(out.matches(": Compressed to ").count(), 5, "{out}");
    assert_eq!(
        uploads_to(&reg, "lade-pp/one"),
        6,
        "5 layers and the config"
    );

    run_ok(ts.lade().args(["tag", &one, &two]));
    let out = run_ok(lade_in(&ts, &home, None).args(["push", &two]));
    assert_eq!(
        out.matches(": Mounted from lade-pp/one").count(),
        5,
        "{out}"
    );
    assert!(
        !out.contains("Compress"),
        "compressed blobs are remembered: {out}"
    );
    assert_eq!(uploads_to(&reg, "lade-pp/two"), 0, "no byte uploaded");
    let mounts = reg
        .access_log()
        .iter()
        .filter(|e| {
            e.method == "POST"
                && e.path.starts_with("/v2/lade-pp/two/blobs/uploads/?")
                && e.path.contains("mount=")
                && e.status == 201
        })
        .count();
    assert_eq!(mounts, 6, "5 layers and the config mounted");
    assert_eq!(pushed_digest(&out), {
        let again = run_ok(lade_in(&ts, &home, None).args(["push", "-q", &one]));
        again.trim().to_string()
    });

    // Pushing again sends no layer bytes.
    let before = uploads_to(&reg, "lade-pp/one");
    let out = run_ok(lade_in(&ts, &home, None).args(["push", &one]));
    assert_eq!(out.matches(": Layer already exists").count(), 5, "{out}");
    assert_eq!(uploads_to(&reg, "lade-pp/one"), before);

    // Pulling twice into another store downloads once.
    let other = TestStore::new();
    run_ok(lade_in(&other, &home, None).args(["pull", &two]));
    let gets = blob_gets(&reg);
    let out = run_ok(lade_in(&other, &home, None).args(["pull", &two]));
    assert!(out.contains("Image is up to date"), "{out}");
    assert_eq!(blob_gets(&reg), gets);
    assert_store_ok(&other);
}

#[test]
fn missing_tag_missing_blob_corrupt_blob_and_dropped_connections() {
    require_tool("skopeo", "skopeo");
    let reg = TestRegistry::plain();
    let src = TestStore::new();
    let home = src.path("home");
    let name = format!("{}/lade-pp/f:1", reg.host());
    import_base(&src, &name);
    run_ok(lade_in(&src, &home, None).args(["push", &name]));
    let layer = remote_layers(&name).remove(0);

    let ts = TestStore::new();
    let pull = |r: &str| {
        lade_in(&ts, &home, None)
            .args(["pull", r])
            .output()
            .unwrap()
    };
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // Missing tag.
    let out = pull(&format!("{}/lade-pp/f:nope", reg.host()));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    let empty = ts.fingerprint();

    // Missing blob.
    let path = blob_file(&reg, &layer);
    let aside = path.with_extension("aside");
    std::fs::rename(&path, &aside).unwrap();
    let out = pull(&name);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("blob {layer} not found")), "{err}");
    assert_eq!(ts.fingerprint(), empty, "nothing stored");
    assert_store_ok(&ts);
    std::fs::rename(&aside, &path).unwrap();

    // A blob whose content does not match its digest.
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    for b in bad.iter_mut().skip(500).take(100) {
        *b = !*b;
    }
    std::fs::write(&path, &bad).unwrap();
    let out = pull(&name);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("digest mismatch") && err.contains(&layer),
        "{err}"
    );
    assert_eq!(ts.fingerprint(), empty, "no bad blob in the store");
    assert_store_ok(&ts);
    std::fs::write(&path, &good).unwrap();

    // A registry that drops the connection mid-layer once: a clean retry.
    let proxy = FaultProxy::start(reg.addr());
    let via = format!("{}/lade-pp/f:1", proxy.host());
    proxy.add(Fault::cut("GET", &format!("/blobs/{layer}"), 300_000, 1));
    let out = run_ok(lade_in(&ts, &home, None).args(["pull", &via]));
    assert!(
        out.contains("Retrying") && out.contains("Downloaded newer image"),
        "{out}"
    );
    assert!(proxy.faults_applied() >= 1);
    assert_store_ok(&ts);

    // ... and every time: bounded attempts, a clear error, nothing half-written.
    let ts2 = TestStore::new();
    proxy.add(Fault::cut("GET", &format!("/blobs/{layer}"), 100_000, 100));
    let out = lade_in(&ts2, &home, None)
        .args(["pull", &via])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("failed after") && err.contains("attempts"),
        "{err}"
    );
    assert_store_ok(&ts2);
    assert!(!ts2.root.join("refs.json").exists(), "nothing named");

    // A push whose upload is refused once (503) starts that upload again.
    let via_push = format!("{}/lade-pp/g:1", proxy.host());
    run_ok(src.lade().args(["tag", &name, &via_push]));
    let hex = layer.trim_start_matches("sha256:");
    proxy.add(Fault::status("PUT", hex, 503, 1));
    let out = run_ok(lade_in(&src, &home, None).args(["push", &via_push]));
    assert!(out.contains("Retrying"), "{out}");
    assert!(out.contains("1: digest: "), "{out}");
}

#[test]
fn basic_auth_over_tls_after_login_and_a_wrong_password() {
    let reg = TestRegistry::basic_tls("alice", "s3cret");
    let ts = TestStore::new();
    let home = ts.path("home");
    let name = format!("{}/lade-pp/private:1", reg.host());
    import_base(&ts, &name);

    // A wrong password (in docker's config, which lade reads): a clear error, nothing changes.
    std::fs::create_dir_all(home.join("docker")).unwrap();
    std::fs::write(
        home.join("docker/config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "YWxpY2U6d3Jvbmc="}}}}}}"#,
            reg.host()
        ),
    )
    .unwrap();
    let before = ts.fingerprint();
    let err = run_fail(lade_in(&ts, &home, Some(&reg)).args(["push", &name]));
    assert!(
        err.contains("rejected user \"alice\"") && err.contains("lade login"),
        "{err}"
    );
    let err = run_fail(lade_in(&ts, &home, Some(&reg)).args(["pull", &name]));
    assert!(err.contains("rejected user \"alice\""), "{err}");
    assert_eq!(ts.fingerprint(), before);

    // lade login (its own file wins over docker's), then push and pull.
    let mut login = lade_in(&ts, &home, Some(&reg));
    login
        .args(["login", "-u", "alice", "--password-stdin", &reg.host()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = login.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run_ok(lade_in(&ts, &home, Some(&reg)).args(["push", &name]));
    let digest = pushed_digest(&out);
    let other = TestStore::new();
    let out = run_ok(lade_in(&other, &home, Some(&reg)).args(["pull", &name]));
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert_eq!(
        run_ok(other.lade().args(["images", "-q", "--no-trunc"])).trim(),
        run_ok(ts.lade().args(["images", "-q", "--no-trunc", &name])).trim()
    );
    assert_store_ok(&other);
}

#[test]
fn a_lade_built_image_pushes_and_runs_in_docker() {
    require_tool("skopeo", "skopeo");
    let reg = TestRegistry::plain();
    let ts = TestStore::new();
    let home = ts.path("home");
    // The base exists only in the store (made locally, never pushed).
    let base = format!("lade-pp-test/{}:1", unique("base"));
    import_base(&ts, &base);
    let ctx = context(
        &ts,
        &format!(
            r#"FROM {base} AS build
RUN mkdir /out && echo built by lade > /out/msg
COPY note.txt /out/
RUN echo second step >> /out/msg
FROM {base}
COPY --from=build /out/ /opt/
RUN cat /opt/msg /opt/note.txt > /opt/all && echo "$(wc -l < /opt/all) lines" >> /opt/all && rm /opt/note.txt && head -c 3000000 /dev/urandom > /opt/rand && sha256sum /opt/rand > /opt/rand.sum
CMD ["cat", "/opt/all"]
"#
        ),
        &[("note.txt", "from the context\n")],
    );
    let app = format!("{}/lade-pp/built:1", reg.host());
    run_ok(
        lade_in(&ts, &home, None)
            .args(["build", "-q", "-t", &app])
            .arg(&ctx),
    );
    let want = "built by lade\nsecond step\nfrom the context\n3 lines\n";
    let (code, out, err) = lade_run({
        let mut c = lade_in(&ts, &home, None);
        c.args(["run", "--rm", &app]);
        c
    });
    assert_eq!((code, out.as_str()), (Some(0), want), "{err}");

    let out = run_ok(lade_in(&ts, &home, None).args(["push", &app]));
    let digest = pushed_digest(&out);
    let lade_inspect: serde_json::Value =
        serde_json::from_str(&run_ok(ts.lade().args(["inspect", &app]))).unwrap();
    let image_id = lade_inspect[0]["Id"].as_str().unwrap().to_string();
    let layers = lade_inspect[0]["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(layers, 3, "base, COPY --from, RUN: {lade_inspect}");

    let s: serde_json::Value = serde_json::from_str(&run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{app}"),
    ])))
    .unwrap();
    assert_eq!(s["Digest"], digest, "{s}");
    assert_eq!(s["Layers"].as_array().unwrap().len(), layers, "{s}");
    assert_eq!(s["Os"], "linux");
    assert_eq!(s["Architecture"], lade_inspect[0]["Architecture"]);
    let config = run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--config",
        &format!("docker://{app}"),
    ]));
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["cat", "/opt/all"])
    );

    // docker pulls the same image (same config bytes: same ID) and runs what lade built.
    let pulled = DockerImage { name: app.clone() };
    run_ok(docker().args(["pull", "-q", &app]));
    assert_eq!(docker_inspect(&pulled.name, "{{.Id}}"), image_id);
    assert_eq!(
        docker_inspect(&pulled.name, "{{index .RepoDigests 0}}"),
        format!("{}/lade-pp/built@{digest}", reg.host())
    );
    let ran = run_ok(docker().args(["run", "--rm", "--network=none", &app]));
    assert_eq!(ran, want);
    let ran = run_ok(docker().args(["run", "--rm", "--network=none", &app, "ls", "/opt"]));
    assert_eq!(ran, "all\nmsg\nrand\nrand.sum\n");
    // The random file's chunks went out as stored blocks, the base's as deflate: docker's
    // gunzip read both back intact.
    let ran = run_ok(docker().args([
        "run",
        "--rm",
        "--network=none",
        &app,
        "sha256sum",
        "-c",
        "/opt/rand.sum",
    ]));
    assert_eq!(ran, "/opt/rand: OK\n");
}

#[test]
fn lade_run_pulls_a_missing_image_and_build_from_pulls_it() {
    let reg = TestRegistry::plain();
    let scratch = TestStore::new();
    let home = scratch.path("home");
    let target = format!("{}/lade-pp/onrun:1", reg.host());
    let (digest, _images) = docker_push_app(&scratch, &target);
    // Through a proxy that counts requests exactly (it records each one before answering).
    let proxy = FaultProxy::start(reg.addr());
    let via = format!("{}/lade-pp/onrun:1", proxy.host());
    let run = |ts: &TestStore, args: &[&str]| {
        let mut c = lade_in(ts, &home, None);
        c.arg("run").args(args);
        lade_run(c)
    };

    // A fresh store: `lade run` pulls first, with docker run's messages on stderr.
    let ts = TestStore::new();
    let (code, out, err) = run(&ts, &["--rm", &via]);
    assert_eq!((code, out.as_str()), (Some(0), "hello\n"), "{err}");
    assert!(
        err.starts_with(&format!(
            "Unable to find image '{via}' locally\n1: Pulling from lade-pp/onrun\n"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "Digest: {digest}\nStatus: Downloaded newer image for {via}\n"
        )),
        "{err}"
    );
    assert_eq!(err.matches(": Download complete").count(), 5, "{err}");
    let (code, out, err) = run(&ts, &["--rm", &via, "sh", "-c", APP_CHECK]);
    assert_eq!((code, out.as_str()), (Some(0), APP_CHECK_OUT), "{err}");
    assert_eq!(err, "", "the image is local now");
    assert_store_ok(&ts);

    // --pull always: one manifest HEAD (after the /v2/ ping), no download.
    let before = proxy.requests().len();
    let (code, out, err) = run(&ts, &["--rm", "--pull", "always", &via]);
    assert_eq!((code, out.as_str()), (Some(0), "hello\n"), "{err}");
    assert_eq!(
        err,
        format!(
            "1: Pulling from lade-pp/onrun\nDigest: {digest}\nStatus: Image is up to date for {via}\n"
        )
    );
    let asked: Vec<_> = proxy.requests()[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        asked
            .iter()
            .all(|r| r == "GET /v2/" || r.starts_with("HEAD /v2/lade-pp/onrun/manifests/1")),
        "{asked:?}"
    );
    assert_eq!(
        asked.iter().filter(|r| r.starts_with("HEAD")).count(),
        1,
        "{asked:?}"
    );

    // A local image needs no registry at all: with the proxy gone, every policy but always runs.
    drop(proxy);
    for args in [
        &["--rm", &via][..],
        &["--rm", "--pull", "missing", &via],
        &["--rm", "--pull", "never", &via],
    ] {
        let (code, out, err) = run(&ts, args);
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (Some(0), "hello\n", ""),
            "{args:?}"
        );
    }
    let (code, _, err) = run(&ts, &["--rm", "--pull", "always", &via]);
    assert_eq!(code, Some(125), "{err}");

    // --pull never in an empty store: docker's 125, nothing pulled, no container.
    let empty = TestStore::new();
    let (code, out, err) = run(&empty, &["--rm", "--pull", "never", &target]);
    assert_eq!((code, out.as_str()), (Some(125), ""), "{err}");
    assert!(
        err.contains(&format!("unable to find image '{target}' locally")),
        "{err}"
    );
    assert!(!empty.root.join("refs.json").exists(), "nothing named");
    // A tag the registry lacks: a clear error, 125, nothing stored or left running.
    let nope = format!("{}/lade-pp/onrun:nope", reg.host());
    let (code, _, err) = run(&empty, &["--rm", &nope]);
    assert_eq!(code, Some(125), "{err}");
    assert!(
        err.starts_with(&format!("Unable to find image '{nope}' locally\n"))
            && err.contains("not found"),
        "{err}"
    );
    assert!(!empty.root.join("refs.json").exists(), "nothing named");
    let ps = run_ok(empty.lade().args(["ps", "-a", "-q"]));
    assert_eq!(ps, "", "no container left");
    assert_store_ok(&empty);

    // FROM the registry's image in another fresh store: the build pulls it and its RUN sees
    // the pulled filesystem.
    let fresh = TestStore::new();
    let ctx = context(
        &fresh,
        &format!(
            "FROM {target}\nRUN ({APP_CHECK}; cat /app/hello) > /seen\nCMD [\"cat\", \"/seen\"]\n"
        ),
        &[],
    );
    let built = format!("lade-pp-test/{}:1", unique("fromreg"));
    run_ok(
        lade_in(&fresh, &home, None)
            .args(["build", "-q", "-t", &built])
            .arg(&ctx),
    );
    let (code, out, err) = run(&fresh, &["--rm", &built]);
    assert_eq!(
        (code, out),
        (Some(0), format!("{APP_CHECK_OUT}hello\n")),
        "{err}"
    );
    let base_id = run_ok(fresh.lade().args(["images", "-q", &target]));
    assert!(!base_id.trim().is_empty(), "the base is in the store");
    assert_store_ok(&fresh);
}

#[test]
fn push_through_a_body_limit_falls_back_to_chunks_and_honours_lade_push_chunk_size() {
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(reg.addr());
    // An nginx with client_max_body_size 300k in front of the registry.
    const LIMIT: u64 = 300 << 10;
    proxy.add(Fault::body_limit("PATCH", "/blobs/uploads/", LIMIT));
    proxy.add(Fault::body_limit("PUT", "/blobs/uploads/", LIMIT));
    let ts = TestStore::new();
    let home = ts.path("home");
    let base = format!("lade-pp-test/{}:1", unique("base"));
    import_base(&ts, &base);
    let within_limit = |from: usize| {
        for r in proxy.requests()[from..]
            .iter()
            .filter(|r| r.fault.is_none())
        {
            if let Some(len) = r.header("content-length") {
                assert!(len.parse::<u64>().unwrap() <= LIMIT, "{r:?}");
            }
        }
    };

    // No setting: the 413 answers switch the push to chunks by themselves.
    let one = format!("{}/lade-pp/limited:1", proxy.host());
    run_ok(ts.lade().args(["tag", &base, &one]));
    let out = run_ok(lade_in(&ts, &home, None).args(["push", &one]));
    let digest = pushed_digest(&out);
    assert!(
        proxy.faults_applied() > 0,
        "the base layer (about 1 MiB gzipped) never hit the limit"
    );
    within_limit(0);
    let other = TestStore::new();
    let direct = format!("{}/lade-pp/limited@{digest}", reg.host());
    run_ok(lade_in(&other, &home, None).args(["pull", &direct]));
    assert_store_ok(&other);

    // LADE_PUSH_CHUNK_SIZE: chunks from the start, nothing refused. (Another layer: the base's
    // would be mounted from lade-pp/limited, not uploaded.)
    let seen = proxy.requests().len();
    let refused = proxy.faults_applied();
    let two = format!("{}/lade-pp/chunked:1", proxy.host());
    let dir = ts.path("noise");
    std::fs::create_dir_all(&dir).unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let noise: Vec<u8> = (0..(1 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("noise"), noise).unwrap();
    run_ok(ts.lade().arg("import").arg(&dir).arg(&two));
    run_ok(
        lade_in(&ts, &home, None)
            .env("LADE_PUSH_CHUNK_SIZE", "256k")
            .args(["push", &two]),
    );
    assert_eq!(proxy.faults_applied(), refused, "a request was refused");
    within_limit(seen);
    let patches = proxy.requests()[seen..]
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/lade-pp/chunked/"))
        .count();
    assert!(
        patches >= 4,
        "{patches} PATCHes for a ~1 MiB layer in 256 KiB chunks"
    );

    // A setting that is not a size is a clear error.
    let three = format!("{}/lade-pp/bad:1", proxy.host());
    run_ok(ts.lade().args(["tag", &base, &three]));
    let err = run_fail(
        lade_in(&ts, &home, None)
            .env("LADE_PUSH_CHUNK_SIZE", "lots")
            .args(["push", &three]),
    );
    assert!(
        err.contains("LADE_PUSH_CHUNK_SIZE") && err.contains("\"lots\" is not a size"),
        "{err}"
    );
    // So is one that would send a request per few bytes.
    let err = run_fail(
        lade_in(&ts, &home, None)
            .env("LADE_PUSH_CHUNK_SIZE", "5")
            .args(["push", &three]),
    );
    assert!(
        err.contains("LADE_PUSH_CHUNK_SIZE") && err.contains("below the smallest chunk"),
        "{err}"
    );
}
