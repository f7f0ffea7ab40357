//! Helpers: deterministic test blobs and images pushed through the client.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use lade_registry::manifest::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use lade_registry::{
    BlobSource, Client, Descriptor, Digest, Progress, ProgressFn, PushedBlob, Reference,
};

/// `len` pseudo-random bytes (xorshift), different per `seed`.
pub fn blob(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor::new(media_type, Digest::of(bytes), bytes.len() as u64)
}

/// An image made of `layers` (arbitrary bytes: the registry does not look inside).
pub struct TestImage {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub manifest: Vec<u8>,
    pub media_type: &'static str,
}

impl TestImage {
    pub fn new(layers: Vec<Vec<u8>>, arch: &str) -> TestImage {
        let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, &config),
            "layers": layers.iter().map(|l| descriptor(OCI_LAYER_GZIP, l)).collect::<Vec<_>>(),
        }))
        .unwrap();
        TestImage {
            config,
            layers,
            manifest,
            media_type: OCI_MANIFEST,
        }
    }

    pub fn config_descriptor(&self) -> Descriptor {
        descriptor(OCI_CONFIG, &self.config)
    }

    pub fn layer_descriptors(&self) -> Vec<Descriptor> {
        self.layers
            .iter()
            .map(|l| descriptor(OCI_LAYER_GZIP, l))
            .collect()
    }

    pub fn digest(&self) -> Digest {
        Digest::of(&self.manifest)
    }

    /// Pushes blobs (config last, as docker does) then the manifest under `target`'s tag.
    pub async fn push(
        &self,
        client: &Client,
        target: &Reference,
        mount_from: &[String],
    ) -> Vec<PushedBlob> {
        let mut results = Vec::new();
        for (layer, desc) in self.layers.iter().zip(self.layer_descriptors()) {
            results.push(
                client
                    .push_blob(
                        target,
                        &desc,
                        &BlobSource::from(layer.clone()),
                        mount_from,
                        &ProgressFn::none(),
                    )
                    .await
                    .unwrap(),
            );
        }
        results.push(
            client
                .push_blob(
                    target,
                    &self.config_descriptor(),
                    &BlobSource::from(self.config.clone()),
                    mount_from,
                    &ProgressFn::none(),
                )
                .await
                .unwrap(),
        );
        let digest = client
            .put_manifest(target, self.media_type, &self.manifest)
            .await
            .unwrap();
        assert_eq!(digest, self.digest());
        results
    }
}

/// A progress callback that records events as text.
pub fn recorder() -> (ProgressFn, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let f = ProgressFn::new(move |p| {
        let line = match p {
            Progress::Started { done, .. } => format!("started {done}"),
            Progress::Advanced { .. } => return,
            Progress::Retrying { done, error, .. } => format!("retrying {done} {error}"),
            Progress::Exists { .. } => "exists".into(),
            Progress::Mounted { from, .. } => format!("mounted {from}"),
            Progress::Finished { total, .. } => format!("finished {total}"),
            Progress::Compressing { .. } => "compressing".into(),
            Progress::Compressed { .. } => "compressed".into(),
        };
        l.lock().unwrap().push(line);
    });
    (f, log)
}
