//! Images between the real registry and a real store: `pull_image`, `push_image`,
//! `ensure_image` (what FROM calls). Multi-threaded runtimes: the functions park a worker while
//! the store's blocking work runs on scoped threads.

use std::path::Path;

use lade_cache::{Compression, Image, Reference, Store, TarOptions};
use lade_registry::manifest::{DOCKER_MANIFEST_V2, OCI_INDEX, OCI_MANIFEST};
use lade_registry::testing::{Fault, FaultProxy, TestRegistry};
use lade_registry::{
    ensure_image, pull_image, push_image, Client, Digest, Error, Platform, ProgressFn, PullPolicy,
    PushOptions, PushedBlob,
};

use crate::common::{blob, recorder};

/// A two-layer image for `arch` in `store`, named `name`: a 1 MiB random file plus text (layer
/// 1), a second random file (layer 2).
fn make_image(store: &Store, scratch: &Path, seed: u64, arch: &str, name: &Reference) -> Image {
    let mut diff_ids = Vec::new();
    for (i, len) in [(0u64, 1 << 20), (1, 300 << 10)] {
        let d = scratch.join(format!("layer-{seed}-{i}"));
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::write(d.join(format!("data/random-{i}")), blob(len, seed * 10 + i)).unwrap();
        std::fs::write(
            d.join("data/text"),
            format!("layer {i} of image {seed}\n").repeat(500),
        )
        .unwrap();
        diff_ids.push(
            store
                .add_layer_from_dir(&d, &TarOptions::default())
                .unwrap()
                .diff_id,
        );
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": [format!("SEED={seed}")]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let image = store.put_config(&config).unwrap();
    store.tag(name, &image.id).unwrap();
    image
}

fn store_in(dir: &Path, name: &str) -> Store {
    Store::open(dir.join(name)).unwrap()
}

fn blob_gets(reg: &TestRegistry) -> usize {
    reg.access_log()
        .iter()
        .filter(|e| e.method == "GET" && e.path.contains("/blobs/sha256:"))
        .count()
}

fn layer_uploads(reg: &TestRegistry, repo: &str) -> usize {
    let prefix = format!("/v2/{repo}/blobs/uploads/");
    reg.access_log()
        .iter()
        .filter(|e| e.method == "PUT" && e.status == 201 && e.path.starts_with(&prefix))
        .count()
}

fn assert_consistent(store: &Store) {
    let c = store.check(true).unwrap();
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(
        std::fs::read_dir(store.root().join("tmp")).unwrap().count(),
        0,
        "temp files left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pull_verifies_names_and_reuses_everything() {
    let reg = TestRegistry::plain();
    let client = Client::new(reg.client_config());
    let t = tempfile::tempdir().unwrap();
    let a = store_in(t.path(), "a");
    let name = reg.reference("lade/img:1");
    let image = make_image(&a, t.path(), 1, "amd64", &name);

    let (progress, events) = recorder();
    let pushed = push_image(
        &client,
        &a,
        &image,
        &name,
        &PushOptions::default(),
        &progress,
    )
    .await
    .unwrap();
    assert_eq!(pushed.media_type, DOCKER_MANIFEST_V2);
    assert_eq!(pushed.layers_compressed, 2);
    assert!(pushed.blobs.iter().all(|b| *b == PushedBlob::Uploaded));
    assert_eq!(
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| *e == "compressed")
            .count(),
        2
    );
    // The compressed blobs are remembered: a second push compresses and uploads nothing.
    let again = push_image(
        &client,
        &a,
        &image,
        &name,
        &PushOptions::default(),
        &ProgressFn::none(),
    )
    .await
    .unwrap();
    assert_eq!(again.digest, pushed.digest);
    assert_eq!(again.layers_compressed, 0);
    assert!(again.blobs.iter().all(|b| *b == PushedBlob::Exists));
    assert_eq!(layer_uploads(&reg, "lade/img"), 3);
    // The push recorded the RepoDigest.
    assert_eq!(
        a.resolve(&name.with_digest(pushed.digest.clone()).to_string())
            .unwrap(),
        image.id
    );

    // Into an empty store.
    let b = store_in(t.path(), "b");
    let pulled = pull_image(
        &client,
        &b,
        &name,
        &Platform::default(),
        &ProgressFn::none(),
    )
    .await
    .unwrap();
    assert_eq!(pulled.image.id, image.id);
    assert_eq!(pulled.image.layers, image.layers);
    assert_eq!(pulled.layers_downloaded, 2);
    assert_eq!(pulled.repo_digest, pushed.digest);
    assert!(!pulled.up_to_date);
    assert_eq!(b.resolve(&name.to_string()).unwrap(), image.id);
    assert_eq!(
        b.resolve(&name.with_digest(pushed.digest.clone()).to_string())
            .unwrap(),
        image.id
    );
    assert_consistent(&b);
    // Each layer's record holds the registry's gzip blob: pushing it elsewhere costs nothing
    // (mounted from the repository it came from).
    for l in &image.layers {
        let rec = b.layer(l).unwrap().unwrap();
        assert!(rec.blob(Compression::Gzip).is_some(), "{rec:?}");
    }
    let copy = reg.reference("lade/copy:1");
    b.tag(&copy, &image.id).unwrap();
    let (progress, events) = recorder();
    let mounted = push_image(
        &client,
        &b,
        &pulled.image,
        &copy,
        &PushOptions::default(),
        &progress,
    )
    .await
    .unwrap();
    assert_eq!(mounted.digest, pushed.digest, "same blobs, same manifest");
    assert_eq!(mounted.layers_compressed, 0);
    assert!(
        mounted.blobs.iter().all(|p| *p
            == PushedBlob::Mounted {
                from: "lade/img".into()
            }),
        "{:?}",
        mounted.blobs
    );
    assert_eq!(layer_uploads(&reg, "lade/copy"), 0);
    assert!(events.lock().unwrap().iter().all(|e| e != "compressing"));

    // Pulling again downloads nothing.
    let gets = blob_gets(&reg);
    let again = pull_image(
        &client,
        &b,
        &name,
        &Platform::default(),
        &ProgressFn::none(),
    )
    .await
    .unwrap();
    assert!(again.up_to_date);
    assert_eq!(again.layers_downloaded, 0);
    assert_eq!(blob_gets(&reg), gets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_pushes_an_oci_manifest_that_pulls_back() {
    let reg = TestRegistry::plain();
    let client = Client::new(reg.client_config());
    let t = tempfile::tempdir().unwrap();
    let a = store_in(t.path(), "a");
    let name = reg.reference("lade/zstd:1");
    let image = make_image(&a, t.path(), 2, "amd64", &name);
    let opts = PushOptions {
        compression: Compression::Zstd,
    };
    let pushed = push_image(&client, &a, &image, &name, &opts, &ProgressFn::none())
        .await
        .unwrap();
    assert_eq!(pushed.media_type, OCI_MANIFEST);
    let b = store_in(t.path(), "b");
    let pulled = pull_image(
        &client,
        &b,
        &name,
        &Platform::default(),
        &ProgressFn::none(),
    )
    .await
    .unwrap();
    assert_eq!(pulled.image.id, image.id);
    for l in &image.layers {
        assert!(b
            .layer(l)
            .unwrap()
            .unwrap()
            .blob(Compression::Zstd)
            .is_some());
    }
    assert_consistent(&b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blob_and_wrong_diff_id_leave_nothing_behind() {
    let reg = TestRegistry::plain();
    let client = Client::new(reg.client_config());
    let t = tempfile::tempdir().unwrap();
    let a = store_in(t.path(), "a");
    let name = reg.reference("lade/bad:1");
    let image = make_image(&a, t.path(), 3, "amd64", &name);
    push_image(
        &client,
        &a,
        &image,
        &name,
        &PushOptions::default(),
        &ProgressFn::none(),
    )
    .await
    .unwrap();
    let gz = a
        .layer(&image.layers[0])
        .unwrap()
        .unwrap()
        .blob(Compression::Gzip)
        .unwrap()
        .clone();

    // Same size, different bytes in the registry's storage.
    let path = reg.blob_data_path(&gz.digest);
    let mut data = std::fs::read(&path).unwrap();
    let good = data.clone();
    for b in data.iter_mut().skip(1000).take(64) {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &data).unwrap();
    let b = store_in(t.path(), "b");
    let err = pull_image(
        &client,
        &b,
        &name,
        &Platform::default(),
        &ProgressFn::none(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(!b.has_blob(&gz.digest));
    assert!(b.layer(&image.layers[0]).unwrap().is_none());
    assert!(b.refs().unwrap().refs.is_empty(), "nothing named");
    assert_consistent(&b);
    std::fs::write(&path, &good).unwrap();

    // A config whose diffID does not match the layer's content.
    let mut config: serde_json::Value = serde_json::from_slice(&image.config_bytes).unwrap();
    config["rootfs"]["diff_ids"][0] = serde_json::json!(Digest::of(b"not this layer"));
    let config = serde_json::to_vec(&config).unwrap();
    let wrong = reg.reference("lade/bad:wrong-diffid");
    let cdesc = lade_registry::Descriptor::new(
        lade_registry::manifest::DOCKER_CONFIG,
        Digest::of(&config),
        config.len() as u64,
    );
    client
        .push_blob(
            &wrong,
            &cdesc,
            &lade_registry::BlobSource::from(config.clone()),
            &[],
            &ProgressFn::none(),
        )
        .await
        .unwrap();
    let resolved = client
        .resolve_image(&name, &Platform::default())
        .await
        .unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&resolved.manifest.bytes).unwrap();
    manifest["config"] = serde_json::to_value(&cdesc).unwrap();
    client
        .put_manifest(
            &wrong,
            DOCKER_MANIFEST_V2,
            &serde_json::to_vec(&manifest).unwrap(),
        )
        .await
        .unwrap();
    let err = pull_image(
        &client,
        &b,
        &wrong,
        &Platform::default(),
        &ProgressFn::none(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::DigestMismatch { .. }) && err.to_string().contains("diff_ids"),
        "{err}"
    );
    assert!(b.layer(&image.layers[0]).unwrap().is_none());
    assert!(b.refs().unwrap().refs.is_empty());
    assert_consistent(&b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_picks_the_platform_and_a_single_manifest_is_checked() {
    let reg = TestRegistry::plain();
    let client = Client::new(reg.client_config());
    let t = tempfile::tempdir().unwrap();
    let a = store_in(t.path(), "a");
    let amd = reg.reference("lade/multi:amd64");
    let arm = reg.reference("lade/multi:arm64");
    let amd_img = make_image(&a, t.path(), 4, "amd64", &amd);
    let arm_img = make_image(&a, t.path(), 5, "arm64", &arm);
    let opts = PushOptions::default();
    let amd_push = push_image(&client, &a, &amd_img, &amd, &opts, &ProgressFn::none())
        .await
        .unwrap();
    let arm_push = push_image(&client, &a, &arm_img, &arm, &opts, &ProgressFn::none())
        .await
        .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST_V2, "digest": amd_push.digest, "size": amd_push.size,
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": DOCKER_MANIFEST_V2, "digest": arm_push.digest, "size": arm_push.size,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    }))
    .unwrap();
    let multi = reg.reference("lade/multi:1");
    let index_digest = client
        .put_manifest(&multi, OCI_INDEX, &index)
        .await
        .unwrap();

    let b = store_in(t.path(), "b");
    let arm64 = Platform::parse("linux/arm64").unwrap();
    let pulled = pull_image(&client, &b, &multi, &arm64, &ProgressFn::none())
        .await
        .unwrap();
    assert_eq!(pulled.image.id, arm_img.id);
    assert_eq!(
        pulled.repo_digest, index_digest,
        "RepoDigest is the index's"
    );
    assert_eq!(pulled.manifest_digest, arm_push.digest);
    let pulled = pull_image(
        &client,
        &b,
        &multi,
        &Platform::default(),
        &ProgressFn::none(),
    )
    .await
    .unwrap();
    assert_eq!(pulled.image.id, amd_img.id);
    assert_eq!(b.resolve(&multi.to_string()).unwrap(), amd_img.id);

    // A single-platform image for another architecture is refused unless asked for.
    let err = pull_image(&client, &b, &arm, &Platform::default(), &ProgressFn::none())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::PlatformNotFound { .. })
            && err.to_string().contains("--platform linux/arm64"),
        "{err}"
    );
    assert!(b.resolve(&arm.to_string()).is_err());
    pull_image(&client, &b, &arm, &arm64, &ProgressFn::none())
        .await
        .unwrap();
    assert_consistent(&b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_image_touches_no_network_when_cached_and_heads_with_pull() {
    let reg = TestRegistry::plain();
    let client = Client::new(reg.client_config());
    let t = tempfile::tempdir().unwrap();
    let a = store_in(t.path(), "a");
    let name = reg.reference("lade/base:1");
    let first = make_image(&a, t.path(), 6, "amd64", &name);
    push_image(
        &client,
        &a,
        &first,
        &name,
        &PushOptions::default(),
        &ProgressFn::none(),
    )
    .await
    .unwrap();

    let b = store_in(t.path(), "b");
    let p = Platform::default();
    let got = ensure_image(
        &client,
        &b,
        &name,
        &p,
        PullPolicy::Missing,
        &ProgressFn::none(),
    )
    .await
    .unwrap();
    assert_eq!(got.image.id, first.id);
    assert!(got.pulled.is_some());
    let repo_digest = got.repo_digest.clone().unwrap();

    // Cached: no request at all, and the same repo digest for the build's cache key.
    let before = reg.access_log().len();
    let got = ensure_image(
        &client,
        &b,
        &name,
        &p,
        PullPolicy::Missing,
        &ProgressFn::none(),
    )
    .await
    .unwrap();
    assert!(got.pulled.is_none());
    assert_eq!(got.repo_digest.as_ref(), Some(&repo_digest));
    assert_eq!(
        reg.access_log().len(),
        before,
        "{:?}",
        &reg.access_log()[before..]
    );

    // --pull with an unchanged tag: one HEAD, nothing else.
    let got = ensure_image(
        &client,
        &b,
        &name,
        &p,
        PullPolicy::Always,
        &ProgressFn::none(),
    )
    .await
    .unwrap();
    assert!(got.pulled.is_none());
    let log = reg.access_log();
    assert_eq!(log.len(), before + 1, "{:?}", &log[before..]);
    assert_eq!(log[before].method, "HEAD");

    // The tag moves upstream: --pull fetches the new image, plain FROM keeps the local one.
    let second = make_image(&a, t.path(), 7, "amd64", &name);
    push_image(
        &client,
        &a,
        &second,
        &name,
        &PushOptions::default(),
        &ProgressFn::none(),
    )
    .await
    .unwrap();
    let got = ensure_image(
        &client,
        &b,
        &name,
        &p,
        PullPolicy::Missing,
        &ProgressFn::none(),
    )
    .await
    .unwrap();
    assert_eq!(got.image.id, first.id);
    let got = ensure_image(
        &client,
        &b,
        &name,
        &p,
        PullPolicy::Always,
        &ProgressFn::none(),
    )
    .await
    .unwrap();
    assert_eq!(got.image.id, second.id);
    assert!(got.pulled.is_some());

    // A digest reference present locally never asks.
    let pinned = name.with_digest(repo_digest);
    let before = reg.access_log().len();
    let got = ensure_image(
        &client,
        &b,
        &pinned,
        &p,
        PullPolicy::Always,
        &ProgressFn::none(),
    )
    .await
    .unwrap();
    assert_eq!(got.image.id, first.id);
    assert_eq!(reg.access_log().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_mid_layer_resumes_into_the_store_and_persistent_cuts_fail_cleanly() {
    let reg = TestRegistry::plain();
    let direct = Client::new(reg.client_config());
    let t = tempfile::tempdir().unwrap();
    let a = store_in(t.path(), "a");
    let name = reg.reference("lade/cut:1");
    let image = make_image(&a, t.path(), 8, "amd64", &name);
    push_image(
        &direct,
        &a,
        &image,
        &name,
        &PushOptions::default(),
        &ProgressFn::none(),
    )
    .await
    .unwrap();
    let gz = a
        .layer(&image.layers[0])
        .unwrap()
        .unwrap()
        .blob(Compression::Gzip)
        .unwrap()
        .clone();

    let proxy = FaultProxy::start(reg.addr());
    let via = Reference::parse(&format!("{}/lade/cut:1", proxy.host())).unwrap();
    let client = Client::new(reg.client_config());
    proxy.add(Fault::cut(
        "GET",
        &format!("/blobs/{}", gz.digest),
        200_000,
        1,
    ));
    let b = store_in(t.path(), "b");
    let (progress, events) = recorder();
    let pulled = pull_image(&client, &b, &via, &Platform::default(), &progress)
        .await
        .unwrap();
    assert_eq!(pulled.image.id, image.id);
    assert!(
        proxy.requests().iter().any(|r| r.header("range").is_some()),
        "resumed with Range"
    );
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.starts_with("retrying")),
        "{:?}",
        events.lock().unwrap()
    );
    assert_consistent(&b);

    // Cut every time: bounded attempts, a clear error, nothing half-written.
    let c = store_in(t.path(), "c");
    proxy.add(Fault::cut(
        "GET",
        &format!("/blobs/{}", gz.digest),
        50_000,
        100,
    ));
    let err = pull_image(&client, &c, &via, &Platform::default(), &ProgressFn::none())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::RetriesExhausted { .. }) && err.to_string().contains("attempts"),
        "{err}"
    );
    assert!(c.layer(&image.layers[0]).unwrap().is_none());
    assert!(c.refs().unwrap().refs.is_empty());
    assert_consistent(&c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_streamed_upload_falls_back_to_the_stored_blob() {
    let reg = TestRegistry::plain();
    let t = tempfile::tempdir().unwrap();
    let a = store_in(t.path(), "a");
    let proxy = FaultProxy::start(reg.addr());
    let name = Reference::parse(&format!("{}/lade/fallback:1", proxy.host())).unwrap();
    let image = make_image(&a, t.path(), 9, "amd64", &name);
    // The compressed bytes are streamed with PATCH while they are made: refuse the first one.
    proxy.add(Fault::status(
        "PATCH",
        "/v2/lade/fallback/blobs/uploads/",
        503,
        1,
    ));
    let client = Client::new(reg.client_config());
    let pushed = push_image(
        &client,
        &a,
        &image,
        &name,
        &PushOptions::default(),
        &ProgressFn::none(),
    )
    .await
    .unwrap();
    assert_eq!(proxy.faults_applied(), 1);
    assert_eq!(
        pushed.layers_compressed, 2,
        "compressed once each, despite the failure"
    );
    let b = store_in(t.path(), "b");
    let pulled = pull_image(
        &client,
        &b,
        &name,
        &Platform::default(),
        &ProgressFn::none(),
    )
    .await
    .unwrap();
    assert_eq!(pulled.image.id, image.id);
    assert_consistent(&b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_falls_back_to_chunks_when_bodies_are_too_large() {
    let reg = TestRegistry::plain();
    let t = tempfile::tempdir().unwrap();
    let a = store_in(t.path(), "a");
    let proxy = FaultProxy::start(reg.addr());
    let name = Reference::parse(&format!("{}/lade/limited:1", proxy.host())).unwrap();
    // Layer 1 compresses to about 1 MiB (random data): over the proxy's limit, as behind an
    // nginx with client_max_body_size 400k.
    let image = make_image(&a, t.path(), 12, "amd64", &name);
    const LIMIT: u64 = 400 << 10;
    proxy.add(Fault::body_limit("PATCH", "/blobs/uploads/", LIMIT));
    proxy.add(Fault::body_limit("PUT", "/blobs/uploads/", LIMIT));
    let client = Client::new(reg.client_config());
    let pushed = push_image(
        &client,
        &a,
        &image,
        &name,
        &PushOptions::default(),
        &ProgressFn::none(),
    )
    .await
    .unwrap();
    assert!(pushed.blobs.iter().all(|b| *b == PushedBlob::Uploaded));
    let reqs = proxy.requests();
    let refused: Vec<_> = reqs.iter().filter(|r| r.fault.is_some()).collect();
    assert!(!refused.is_empty(), "the limit was never hit: {reqs:?}");
    // What got through was within the limit, in several PATCHes of the big layer.
    for r in reqs.iter().filter(|r| r.fault.is_none()) {
        if let Some(len) = r.header("content-length") {
            assert!(len.parse::<u64>().unwrap() <= LIMIT, "{r:?}");
        }
    }
    let chunks = reg
        .access_log()
        .iter()
        .filter(|e| e.method == "PATCH" && e.status == 202)
        .count();
    assert!(
        chunks >= 3,
        "{chunks} PATCHes for a ~1 MiB layer in <=400 KiB chunks"
    );
    // The registry has the image, byte for byte (it checked every digest).
    let b = store_in(t.path(), "b");
    let direct = reg.reference("lade/limited:1");
    let pulled = pull_image(
        &client,
        &b,
        &direct,
        &Platform::default(),
        &ProgressFn::none(),
    )
    .await
    .unwrap();
    assert_eq!(pulled.image.id, image.id);
    assert_consistent(&b);
    // The client learned: another push to that registry sends no refused request.
    let seen = proxy.requests().len();
    let c = store_in(t.path(), "c");
    let name2 = Reference::parse(&format!("{}/lade/limited2:1", proxy.host())).unwrap();
    let image2 = make_image(&c, t.path(), 13, "amd64", &name2);
    push_image(
        &client,
        &c,
        &image2,
        &name2,
        &PushOptions::default(),
        &ProgressFn::none(),
    )
    .await
    .unwrap();
    assert!(
        proxy.requests()[seen..].iter().all(|r| r.fault.is_none()),
        "{:?}",
        &proxy.requests()[seen..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_below_the_smallest_chunk_is_a_clear_error() {
    let reg = TestRegistry::plain();
    let t = tempfile::tempdir().unwrap();
    let a = store_in(t.path(), "a");
    let proxy = FaultProxy::start(reg.addr());
    let name = Reference::parse(&format!("{}/lade/tiny:1", proxy.host())).unwrap();
    let image = make_image(&a, t.path(), 14, "amd64", &name);
    proxy.add(Fault::body_limit("PATCH", "/blobs/uploads/", 10 << 10));
    proxy.add(Fault::body_limit("PUT", "/blobs/uploads/", 10 << 10));
    let client = Client::new(reg.client_config());
    let err = push_image(
        &client,
        &a,
        &image,
        &name,
        &PushOptions::default(),
        &ProgressFn::none(),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(err.is_too_large(), "{msg}");
    assert!(
        msg.contains("413") && msg.contains("client_max_body_size"),
        "{msg}"
    );
    assert_consistent(&a);
}
