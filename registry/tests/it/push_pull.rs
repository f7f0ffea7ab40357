//! Push and pull against a plain-HTTP registry: round trips, HEAD hits, mounts, chunked and
//! streamed uploads, indexes and platform selection, not-found and corruption.

use lade_registry::manifest::{
    DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST_V2, OCI_INDEX,
    OCI_MANIFEST,
};
use lade_registry::testing::TestRegistry;
use lade_registry::{
    BlobSource, Client, ClientConfig, Digest, Error, Manifest, Platform, ProgressFn, PushedBlob,
};

use crate::common::{blob, descriptor, recorder, TestImage};

fn uploads_to(reg: &TestRegistry, repo: &str) -> usize {
    let prefix = format!("/v2/{repo}/blobs/uploads/");
    reg.access_log()
        .iter()
        .filter(|e| (e.method == "PUT" || e.method == "PATCH") && e.path.starts_with(&prefix))
        .count()
}

#[tokio::test]
async fn push_then_pull_back_byte_identical() {
    let reg = TestRegistry::plain();
    let client = Client::new(reg.client_config());
    let r = reg.reference("lade/app:1");
    let image = TestImage::new(vec![blob(3 << 20, 1), blob(1000, 2), blob(0, 3)], "amd64");
    let pushed = image.push(&client, &r, &[]).await;
    assert!(
        pushed.iter().all(|p| *p == PushedBlob::Uploaded),
        "{pushed:?}"
    );

    let resolved = client
        .resolve_image(&r, &Platform::default())
        .await
        .unwrap();
    assert!(resolved.index.is_none());
    assert_eq!(resolved.manifest.bytes, image.manifest);
    assert_eq!(resolved.manifest.digest, image.digest());
    assert_eq!(resolved.manifest.media_type, OCI_MANIFEST);
    assert_eq!(resolved.manifest.reference.digest(), Some(&image.digest()));
    let config = client
        .fetch_blob_bytes(&r, &resolved.image.config, 1 << 20)
        .await
        .unwrap();
    assert_eq!(config, image.config);

    let (progress, events) = recorder();
    let jobs = resolved
        .image
        .layers
        .iter()
        .map(|d| (d.clone(), Vec::new()))
        .collect();
    let layers = client.fetch_blobs(&r, jobs, &progress).await.unwrap();
    assert_eq!(layers.len(), 3);
    for ((desc, bytes), want) in layers.iter().zip(&image.layers) {
        assert_eq!(bytes, want, "layer {}", desc.digest);
    }
    let finished = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.starts_with("finished"))
        .count();
    assert_eq!(finished, 3);

    // Into a file sink, by digest reference.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer");
    let mut file = tokio::fs::File::create(&path).await.unwrap();
    let pinned = r.with_digest(image.digest());
    client
        .fetch_blob(
            &pinned,
            &resolved.image.layers[0],
            &mut file,
            &ProgressFn::none(),
        )
        .await
        .unwrap();
    drop(file);
    assert_eq!(std::fs::read(&path).unwrap(), image.layers[0]);

    // HEAD of the tag gives the same descriptor without the body.
    let head = client.head_manifest(&r).await.unwrap().unwrap();
    assert_eq!(head.digest, image.digest());
    assert_eq!(head.size, image.manifest.len() as u64);
    assert!(client
        .head_manifest(&reg.reference("lade/app:nope"))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn concurrent_blob_pushes() {
    let reg = TestRegistry::plain();
    let client = Client::new(ClientConfig {
        max_concurrent_uploads: 2,
        ..reg.client_config()
    });
    let r = reg.reference("many/app:1");
    let image = TestImage::new(
        (0..5).map(|i| blob(200_000 + i, 90 + i as u64)).collect(),
        "amd64",
    );
    let jobs = image
        .layers
        .iter()
        .zip(image.layer_descriptors())
        .map(|(l, d)| (d, BlobSource::from(l.clone()), Vec::new()))
        .collect();
    let (progress, events) = recorder();
    let got = client.push_blobs(&r, jobs, &progress).await.unwrap();
    assert_eq!(got, vec![PushedBlob::Uploaded; 5]);
    assert_eq!(
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.starts_with("finished"))
            .count(),
        5
    );
    for (layer, desc) in image.layers.iter().zip(image.layer_descriptors()) {
        assert_eq!(
            client.fetch_blob_bytes(&r, &desc, 1 << 20).await.unwrap(),
            *layer
        );
    }
}

#[tokio::test]
async fn pushing_twice_sends_no_layer_bytes() {
    let reg = TestRegistry::plain();
    let client = Client::new(reg.client_config());
    let r = reg.reference("lade/twice:1");
    let image = TestImage::new(vec![blob(512 << 10, 10), blob(4096, 11)], "amd64");
    image.push(&client, &r, &[]).await;
    let uploads_before = uploads_to(&reg, "lade/twice");
    assert_eq!(uploads_before, 3, "first push uploads 2 layers + config");

    // A fresh client (no state carried over) pushing the same image again.
    let client = Client::new(reg.client_config());
    let (progress, events) = recorder();
    for (layer, desc) in image.layers.iter().zip(image.layer_descriptors()) {
        let got = client
            .push_blob(&r, &desc, &BlobSource::from(layer.clone()), &[], &progress)
            .await
            .unwrap();
        assert_eq!(got, PushedBlob::Exists);
    }
    assert_eq!(*events.lock().unwrap(), ["exists", "exists"]);
    assert_eq!(
        uploads_to(&reg, "lade/twice"),
        uploads_before,
        "no upload requests"
    );
    let heads = reg
        .access_log()
        .iter()
        .filter(|e| e.method == "HEAD" && e.path.contains("/blobs/sha256:") && e.status == 200)
        .count();
    assert!(heads >= 2, "HEAD hits: {heads}");
}

#[tokio::test]
async fn cross_repository_mount_sends_no_bytes() {
    let reg = TestRegistry::plain();
    let client = Client::new(reg.client_config());
    let image = TestImage::new(vec![blob(1 << 20, 20), blob(2000, 21)], "amd64");
    image
        .push(&client, &reg.reference("team/first:1"), &[])
        .await;

    let (progress, events) = recorder();
    let second = reg.reference("team/second:1");
    for (layer, desc) in image.layers.iter().zip(image.layer_descriptors()) {
        let got = client
            .push_blob(
                &second,
                &desc,
                &BlobSource::from(layer.clone()),
                &["team/first".to_string()],
                &progress,
            )
            .await
            .unwrap();
        assert_eq!(
            got,
            PushedBlob::Mounted {
                from: "team/first".into()
            }
        );
    }
    assert_eq!(
        *events.lock().unwrap(),
        ["mounted team/first", "mounted team/first"]
    );
    let mounts: Vec<_> = reg
        .access_log()
        .into_iter()
        .filter(|e| e.method == "POST" && e.path.starts_with("/v2/team/second/blobs/uploads/?"))
        .collect();
    assert_eq!(mounts.len(), 2, "{mounts:?}");
    assert!(
        mounts
            .iter()
            .all(|e| e.status == 201 && e.path.contains("mount=")),
        "{mounts:?}"
    );
    assert_eq!(
        uploads_to(&reg, "team/second"),
        0,
        "no bytes uploaded to the second repository"
    );

    // The mounted blobs serve a pull from the second repository.
    client
        .push_blob(
            &second,
            &image.config_descriptor(),
            &BlobSource::from(image.config.clone()),
            &["team/first".into()],
            &ProgressFn::none(),
        )
        .await
        .unwrap();
    client
        .put_manifest(&second, OCI_MANIFEST, &image.manifest)
        .await
        .unwrap();
    let got = client
        .resolve_image(&second, &Platform::default())
        .await
        .unwrap();
    let bytes = client
        .fetch_blob_bytes(&second, &got.image.layers[0], 2 << 20)
        .await
        .unwrap();
    assert_eq!(bytes, image.layers[0]);
}

#[tokio::test]
async fn mount_refused_falls_back_to_the_offered_upload_session() {
    let reg = TestRegistry::plain();
    let client = Client::new(reg.client_config());
    let layer = blob(100_000, 30);
    let desc = descriptor(DOCKER_LAYER_GZIP, &layer);
    let target = reg.reference("x/target:1");
    let got = client
        .push_blob(
            &target,
            &desc,
            &BlobSource::from(layer.clone()),
            &["x/nowhere".into()],
            &ProgressFn::none(),
        )
        .await
        .unwrap();
    assert_eq!(got, PushedBlob::Uploaded);
    let log = reg.access_log();
    let posts: Vec<_> = log
        .iter()
        .filter(|e| e.method == "POST" && e.path.starts_with("/v2/x/target/blobs/uploads/"))
        .collect();
    assert_eq!(
        posts.len(),
        1,
        "the 202 session was used, no second POST: {posts:?}"
    );
    assert_eq!(posts[0].status, 202);
    assert_eq!(uploads_to(&reg, "x/target"), 1);
    assert_eq!(
        client.blob_exists(&target, &desc.digest).await.unwrap(),
        Some(100_000)
    );
}

#[tokio::test]
async fn chunked_and_streamed_uploads() {
    let reg = TestRegistry::plain();
    let client = Client::new(ClientConfig {
        upload_chunk_size: Some(1 << 20),
        ..reg.client_config()
    });
    let r = reg.reference("chunks/a:1");
    let layer = blob((5 << 20) / 2, 40);
    let desc = descriptor(DOCKER_LAYER_GZIP, &layer);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("layer.tgz");
    std::fs::write(&file, &layer).unwrap();
    let got = client
        .push_blob(&r, &desc, &BlobSource::File(file), &[], &ProgressFn::none())
        .await
        .unwrap();
    assert_eq!(got, PushedBlob::Uploaded);
    let patches = reg
        .access_log()
        .iter()
        .filter(|e| e.method == "PATCH" && e.status == 202)
        .count();
    assert_eq!(patches, 3, "2.5 MiB in 1 MiB chunks");
    assert_eq!(
        client.fetch_blob_bytes(&r, &desc, 4 << 20).await.unwrap(),
        layer
    );

    // Digest unknown in advance: streamed and hashed on the way.
    let streamed = blob(700_000, 41);
    let (digest, size) = client
        .upload_stream(
            &r,
            std::io::Cursor::new(streamed.clone()),
            &ProgressFn::none(),
        )
        .await
        .unwrap();
    assert_eq!(digest, Digest::of(&streamed));
    assert_eq!(size, 700_000);
    assert_eq!(
        client.blob_exists(&r, &digest).await.unwrap(),
        Some(700_000)
    );
}

#[tokio::test]
async fn index_resolves_the_requested_platform() {
    let reg = TestRegistry::plain();
    let client = Client::new(reg.client_config());
    let r = reg.reference("multi/app:1");
    let amd = TestImage::new(vec![blob(1000, 50)], "amd64");
    let arm = TestImage::new(vec![blob(1000, 51)], "arm64");
    for img in [&amd, &arm] {
        img.push(&client, &r.with_digest(img.digest()), &[]).await;
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": arm.digest(), "size": arm.manifest.len(),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": OCI_MANIFEST, "digest": amd.digest(), "size": amd.manifest.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    }))
    .unwrap();
    client.put_manifest(&r, OCI_INDEX, &index).await.unwrap();

    let got = client
        .resolve_image(&r, &Platform::default())
        .await
        .unwrap();
    assert_eq!(got.index.as_ref().unwrap().bytes, index);
    assert_eq!(got.manifest.digest, amd.digest());
    assert_eq!(got.image.layers[0].digest, Digest::of(&amd.layers[0]));
    let got = client
        .resolve_image(&r, &Platform::parse("linux/arm64").unwrap())
        .await
        .unwrap();
    assert_eq!(got.manifest.digest, arm.digest());
    let err = client
        .resolve_image(&r, &Platform::parse("linux/s390x").unwrap())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::PlatformNotFound { .. }), "{err}");
    assert!(
        msg.contains("linux/s390x")
            && msg.contains("linux/amd64")
            && msg.contains("linux/arm64/v8"),
        "{msg}"
    );
}

#[tokio::test]
async fn docker_schema2_manifest_and_list() {
    let reg = TestRegistry::plain();
    let client = Client::new(reg.client_config());
    let r = reg.reference("docker/style:1");
    let layer = blob(5000, 60);
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    for (bytes, mt) in [(&layer, DOCKER_LAYER_GZIP), (&config, DOCKER_CONFIG)] {
        client
            .push_blob(
                &r,
                &descriptor(mt, bytes),
                &BlobSource::from(bytes.clone()),
                &[],
                &ProgressFn::none(),
            )
            .await
            .unwrap();
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST_V2,
        "config": descriptor(DOCKER_CONFIG, &config),
        "layers": [descriptor(DOCKER_LAYER_GZIP, &layer)],
    }))
    .unwrap();
    let mdigest = client
        .put_manifest(
            &r.with_digest(Digest::of(&manifest)),
            DOCKER_MANIFEST_V2,
            &manifest,
        )
        .await
        .unwrap();
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST_V2, "digest": mdigest, "size": manifest.len(),
                       "platform": {"os": "linux", "architecture": "amd64"}}],
    }))
    .unwrap();
    client
        .put_manifest(&r, DOCKER_MANIFEST_LIST, &list)
        .await
        .unwrap();
    let got = client
        .resolve_image(&r, &Platform::default())
        .await
        .unwrap();
    assert_eq!(got.index.unwrap().media_type, DOCKER_MANIFEST_LIST);
    assert_eq!(got.manifest.media_type, DOCKER_MANIFEST_V2);
    assert_eq!(got.manifest.bytes, manifest);
    assert!(matches!(got.manifest.manifest, Manifest::Image(_)));

    // Pushing a document whose declared type disagrees with its content is refused locally.
    let err = client
        .put_manifest(&r, DOCKER_MANIFEST_LIST, &manifest)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidManifest { .. }), "{err}");
}

#[tokio::test]
async fn missing_tag_repository_and_blob() {
    let reg = TestRegistry::plain();
    let client = Client::new(reg.client_config());
    let image = TestImage::new(vec![blob(100, 70)], "amd64");
    let r = reg.reference("have/it:1");
    image.push(&client, &r, &[]).await;

    let missing = reg.reference("have/it:nope");
    let err = client.fetch_manifest(&missing).await.unwrap_err();
    assert!(matches!(err, Error::ManifestNotFound { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("manifest for {missing} not found: the registry has no such tag or digest")
    );

    let err = client
        .fetch_manifest(&reg.reference("never/pushed:1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ManifestNotFound { .. }), "{err}");

    let ghost = descriptor(DOCKER_LAYER_GZIP, b"never pushed");
    let mut sink = Vec::new();
    let err = client
        .fetch_blob(&r, &ghost, &mut sink, &ProgressFn::none())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BlobNotFound { .. }), "{err}");
    assert!(err.to_string().contains(ghost.digest.as_str()), "{err}");
    assert!(sink.is_empty());
    assert_eq!(client.blob_exists(&r, &ghost.digest).await.unwrap(), None);
}

#[tokio::test]
async fn corrupt_content_in_the_registry_is_never_delivered() {
    let reg = TestRegistry::plain();
    let client = Client::new(reg.client_config());
    let r = reg.reference("bad/disk:1");
    let image = TestImage::new(vec![blob(300_000, 80), blob(1000, 81)], "amd64");
    image.push(&client, &r, &[]).await;

    // Same length, different bytes: only the digest can tell.
    let layer = image.layer_descriptors()[0].clone();
    let data = reg.blob_data_path(&layer.digest);
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[150_000] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let mut sink = Vec::new();
    let err = client
        .fetch_blob(&r, &layer, &mut sink, &ProgressFn::none())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(layer.digest.as_str()), "{err}");

    // Truncated on disk: the short blob is refused too.
    let small = image.layer_descriptors()[1].clone();
    let data = reg.blob_data_path(&small.digest);
    std::fs::write(&data, &image.layers[1][..500]).unwrap();
    let err = client
        .fetch_blob_bytes(&r, &small, 1 << 20)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SizeMismatch {
                expected: 1000,
                actual: 500,
                ..
            }
        ),
        "{err}"
    );

    // The manifest is a blob too: corrupt it and both tag and digest fetches fail.
    let mpath = reg.blob_data_path(&image.digest());
    let mut m = std::fs::read(&mpath).unwrap();
    // Still a valid manifest for the registry: one hex digit of the config digest changed.
    let pos = m.windows(7).position(|w| w == b"sha256:").unwrap() + 7;
    m[pos] = if m[pos] == b'a' { b'b' } else { b'a' };
    std::fs::write(&mpath, &m).unwrap();
    for reference in [r.clone(), r.with_digest(image.digest())] {
        let err = client.fetch_manifest(&reference).await.unwrap_err();
        assert!(
            matches!(err, Error::DigestMismatch { .. }),
            "{reference}: {err}"
        );
    }
}
