//! Images and names.
//!
//! An image is its config blob: the image ID is the config digest (as in docker), and the layer
//! list is the config's `rootfs.diff_ids` (each a layer record, see layers.rs). Names live in one
//! small JSON file, `refs.json`: `{"version":1,"refs":{"<normalised ref>":"<image id>"}}`. Keys
//! are full references (`docker.io/library/busybox:latest`, `localhost:5000/x@sha256:...`) or,
//! for an image kept without a name, its ID itself (docker's `<none>:<none>`); an optional
//! `"tagged":{"<image id>":"<RFC 3339>"}` keeps when a user last named each image (docker's
//! `LastTagTime`). The file is read
//! without a lock (it is only ever replaced by rename) and rewritten under `refs.lock`.
//! A few hundred entries parse in microseconds, needing no database dependency.

use std::collections::BTreeMap;
use std::fs;
use std::io;

use oci_spec::image::ImageConfiguration;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::lock::{lock, LockKind};
use crate::reference::Reference;
use crate::store::{Store, MAX_JSON_BYTES};

/// Media types Lade writes.
pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
}

/// The name index as stored in `refs.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RefIndex {
    pub version: u32,
    /// Reference (or bare image ID for unnamed images) -> image ID.
    pub refs: BTreeMap<String, Digest>,
    /// Image ID -> when a user last gave it a name (RFC 3339; `lade tag`, `build -t`,
    /// `import`, `commit`): docker's `Metadata.LastTagTime`. Names that came with the image
    /// (`load`, `pull`) do not count, as in docker. Dropped with the image's last name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tagged: BTreeMap<Digest, String>,
}

/// An image in the store.
#[derive(Debug, Clone)]
pub struct Image {
    /// Config digest (docker's image ID).
    pub id: Digest,
    /// The config exactly as stored (never re-serialised: its digest is the ID).
    pub config_bytes: Vec<u8>,
    pub config: ImageConfiguration,
    /// Layer diffIDs, bottom first.
    pub layers: Vec<Digest>,
}

impl Image {
    /// The OCI manifest Lade uses for this image locally and in `lade save`: config + the
    /// uncompressed layer blobs. Deterministic bytes, so its digest is stable.
    pub fn manifest(&self, store: &Store) -> Result<(Vec<u8>, Digest)> {
        let mut layers = Vec::new();
        for d in &self.layers {
            let rec = store.require_layer(d)?;
            layers.push(serde_json::json!({
                "mediaType": crate::tarfmt::Compression::None.layer_media_type(),
                "digest": d,
                "size": rec.size,
            }));
        }
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {
                "mediaType": media::OCI_CONFIG,
                "digest": self.id,
                "size": self.config_bytes.len(),
            },
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&m).map_err(|e| Error::Json {
            what: format!("manifest of {}", self.id),
            source: e,
        })?;
        let d = Digest::of(&bytes);
        Ok((bytes, d))
    }
}

/// One row of [`Store::images`].
#[derive(Debug, Clone)]
pub struct ImageSummary {
    pub id: Digest,
    /// Tagged names (`name:tag`), sorted.
    pub tags: Vec<Reference>,
    /// Digest names (`name@sha256:...`), sorted.
    pub digests: Vec<Reference>,
    /// `created` of the config (RFC 3339), if any.
    pub created: Option<String>,
    /// Sum of the uncompressed layer sizes.
    pub size: u64,
}

/// Parses a config and extracts the diffIDs.
pub fn parse_config(bytes: &[u8], what: &str) -> Result<(ImageConfiguration, Vec<Digest>)> {
    let config: ImageConfiguration = serde_json::from_slice(bytes).map_err(|e| Error::Json {
        what: what.to_string(),
        source: e,
    })?;
    let layers = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| Digest::parse(d))
        .collect::<Result<Vec<_>>>()?;
    Ok((config, layers))
}

impl Store {
    fn refs_path(&self) -> std::path::PathBuf {
        self.root().join("refs.json")
    }

    /// The whole name index.
    pub fn refs(&self) -> Result<RefIndex> {
        let p = self.refs_path();
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::Json {
                what: p.display().to_string(),
                source: e,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RefIndex {
                version: 1,
                ..RefIndex::default()
            }),
            Err(e) => Err(e).ctx("read", p),
        }
    }

    /// Read-modify-write of the index under `refs.lock`; `f` returns whether it changed
    /// anything. Pending blob/snapshot renames are fsynced first, so a name never points at
    /// content that a power loss could lose.
    pub fn update_refs<T>(&self, f: impl FnOnce(&mut RefIndex) -> Result<T>) -> Result<T> {
        let _g = lock(
            &self.root().join("refs.lock"),
            LockKind::Exclusive,
            true,
            self.root(),
        )?;
        let mut idx = self.refs()?;
        let before = idx.clone();
        let out = f(&mut idx)?;
        let named: std::collections::BTreeSet<&Digest> = idx.refs.values().collect();
        let stale: Vec<Digest> = idx
            .tagged
            .keys()
            .filter(|id| !named.contains(id))
            .cloned()
            .collect();
        for id in stale {
            idx.tagged.remove(&id);
        }
        if idx != before {
            self.sync()?;
            idx.version = 1;
            let json = serde_json::to_vec_pretty(&idx).map_err(|e| Error::Json {
                what: "refs.json".into(),
                source: e,
            })?;
            self.write_atomic(&self.refs_path(), &json)?;
        }
        Ok(out)
    }

    /// Reads an image by ID (config digest). Checks the config parses; does not check layers.
    pub fn image_by_id(&self, id: &Digest) -> Result<Image> {
        let config_bytes = match self.read_blob(id, MAX_JSON_BYTES) {
            Err(Error::NotFound(_)) => {
                return Err(Error::NotFound(format!("image {id} is not in the store")));
            }
            r => r?,
        };
        let (config, layers) = parse_config(&config_bytes, &format!("image config {id}"))?;
        Ok(Image {
            id: id.clone(),
            config_bytes,
            config,
            layers,
        })
    }

    /// Resolves what a user typed: a reference (`busybox`, `x:1`, `x@sha256:..`), a full image
    /// ID (`sha256:<hex>`) or a unique ID prefix (at least 4 hex digits, `sha256:` optional).
    pub fn resolve(&self, s: &str) -> Result<Digest> {
        let idx = self.refs()?;
        let ids = || idx.refs.values();
        if let Ok(d) = Digest::parse(s) {
            if ids().any(|v| *v == d) {
                return Ok(d);
            }
        }
        let hexpart = s.strip_prefix("sha256:").unwrap_or(s);
        if hexpart.len() >= 4
            && hexpart.len() <= 64
            && hexpart.bytes().all(|b| b.is_ascii_hexdigit())
        {
            let mut found: Vec<&Digest> = ids().filter(|d| d.hex().starts_with(hexpart)).collect();
            found.sort();
            found.dedup();
            match found.len() {
                1 => return Ok(found[0].clone()),
                n if n > 1 => {
                    return Err(Error::NotFound(format!(
                        "image ID prefix {s} is ambiguous ({n} images); give more digits"
                    )))
                }
                _ => {}
            }
        }
        let r = Reference::parse(s)?;
        idx.refs.get(&r.to_string()).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "no such image: {} (see `lade images`)",
                r.familiar()
            ))
        })
    }

    /// [`Store::resolve`] then [`Store::image_by_id`].
    pub fn image(&self, s: &str) -> Result<Image> {
        let id = self.resolve(s)?;
        self.image_by_id(&id)
    }

    /// Stores a config (exact bytes) as an image after checking that every layer it lists is in
    /// the store. Does not name it: see [`Store::tag`] / [`Store::keep_unnamed`].
    pub fn put_config(&self, config_bytes: &[u8]) -> Result<Image> {
        let id = Digest::of(config_bytes);
        let (config, layers) = parse_config(config_bytes, "image config")?;
        for l in &layers {
            self.require_layer(l)?;
        }
        self.write_blob_bytes(config_bytes)?;
        Ok(Image {
            id,
            config_bytes: config_bytes.to_vec(),
            config,
            layers,
        })
    }

    /// Creates an image from a config (serialised once, here) and optionally names it.
    /// The config's `rootfs.diff_ids` must name layers already in the store (see
    /// [`Store::add_layer`], [`Store::commit_upperdir`]).
    pub fn create_image(
        &self,
        config: &ImageConfiguration,
        name: Option<&Reference>,
    ) -> Result<Image> {
        let bytes = serde_json::to_vec(config).map_err(|e| Error::Json {
            what: "image config".into(),
            source: e,
        })?;
        let img = self.put_config(&bytes)?;
        match name {
            Some(r) => {
                self.tag(r, &img.id)?;
            }
            None => self.keep_unnamed(&img.id)?,
        }
        Ok(img)
    }

    /// Points `reference` at image `id`; returns the image it pointed at before.
    pub fn tag(&self, reference: &Reference, id: &Digest) -> Result<Option<Digest>> {
        self.update_refs(|idx| {
            let prev = idx.refs.insert(reference.to_string(), id.clone());
            // A named image needs no unnamed pin any more.
            idx.refs.remove(id.as_str());
            Ok(prev)
        })
    }

    /// [`Store::tag`] done by a user (`lade tag`, `build -t`, `import NAME`, `commit NAME`):
    /// also records `when` (RFC 3339) as the image's last tag time (see [`RefIndex::tagged`]).
    pub fn tag_at(&self, reference: &Reference, id: &Digest, when: &str) -> Result<Option<Digest>> {
        self.update_refs(|idx| {
            let prev = idx.refs.insert(reference.to_string(), id.clone());
            idx.refs.remove(id.as_str());
            idx.tagged.insert(id.clone(), when.to_string());
            Ok(prev)
        })
    }

    /// When a user last gave image `id` a name (see [`RefIndex::tagged`]), if ever.
    pub fn last_tag_time(&self, id: &Digest) -> Result<Option<String>> {
        Ok(self.refs()?.tagged.remove(id))
    }

    /// Keeps an image that has no name (shown as `<none>` by `lade images`), unless it is
    /// already named.
    pub fn keep_unnamed(&self, id: &Digest) -> Result<()> {
        self.update_refs(|idx| {
            if !idx.refs.values().any(|v| v == id) {
                idx.refs.insert(id.to_string(), id.clone());
            }
            Ok(())
        })
    }

    /// Removes a name; returns the image it pointed at.
    pub fn untag(&self, reference: &Reference) -> Result<Option<Digest>> {
        self.update_refs(|idx| Ok(idx.refs.remove(&reference.to_string())))
    }

    /// Removes every name of an image (and its unnamed pin). Returns the removed names.
    /// Its blobs and snapshots go at the next [`Store::prune`].
    pub fn remove_image(&self, id: &Digest) -> Result<Vec<String>> {
        self.update_refs(|idx| {
            let names: Vec<String> = idx
                .refs
                .iter()
                .filter(|(_, v)| *v == id)
                .map(|(k, _)| k.clone())
                .collect();
            for n in &names {
                idx.refs.remove(n);
            }
            Ok(names)
        })
    }

    /// Every image with its names, newest first.
    pub fn images(&self) -> Result<Vec<ImageSummary>> {
        let idx = self.refs()?;
        let mut by_id: BTreeMap<Digest, (Vec<Reference>, Vec<Reference>)> = BTreeMap::new();
        for (k, id) in &idx.refs {
            let e = by_id.entry(id.clone()).or_default();
            if k == id.as_str() {
                continue;
            }
            match Reference::parse(k) {
                Ok(r) if r.digest().is_some() => e.1.push(r),
                Ok(r) => e.0.push(r),
                Err(_) => {}
            }
        }
        let mut out = Vec::new();
        for (id, (mut tags, mut digests)) in by_id {
            tags.sort();
            digests.sort();
            let (created, size) = match self.image_by_id(&id) {
                Ok(img) => (img.config.created().clone(), self.layers_size(&img.layers)),
                Err(_) => (None, 0),
            };
            out.push(ImageSummary {
                id,
                tags,
                digests,
                created,
                size,
            });
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tarfmt::TarOptions;

    #[test]
    fn create_tag_resolve_untag() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path().join("root")).unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f"), b"x").unwrap();
        let rec = s.add_layer_from_dir(&src, &TarOptions::default()).unwrap();
        let config: ImageConfiguration = serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [rec.diff_id]},
        }))
        .unwrap();
        let name = Reference::parse("me/app:1").unwrap();
        let img = s.create_image(&config, Some(&name)).unwrap();
        assert_eq!(s.resolve("me/app:1").unwrap(), img.id);
        assert_eq!(s.resolve("docker.io/me/app:1").unwrap(), img.id);
        assert_eq!(s.resolve(&img.id.hex()[..12]).unwrap(), img.id);
        assert_eq!(s.resolve(img.id.as_str()).unwrap(), img.id);
        assert!(s.resolve("me/app:2").is_err());
        let list = s.images().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].tags, vec![name.clone()]);
        assert_eq!(list[0].size, rec.size);
        let (m, d) = img.manifest(&s).unwrap();
        assert_eq!(Digest::of(&m), d);
        assert_eq!(s.untag(&name).unwrap(), Some(img.id.clone()));
        assert!(s.images().unwrap().is_empty());
        // Creating without a name keeps it as <none>.
        let img2 = s.create_image(&config, None).unwrap();
        assert_eq!(s.images().unwrap()[0].tags.len(), 0);
        assert_eq!(s.remove_image(&img2.id).unwrap().len(), 1);
    }

    #[test]
    fn last_tag_time_is_kept_while_the_image_is_named() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path().join("root")).unwrap();
        let config: ImageConfiguration = serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
        }))
        .unwrap();
        let a = Reference::parse("me/app:1").unwrap();
        let b = Reference::parse("me/app:2").unwrap();
        let img = s.create_image(&config, Some(&a)).unwrap();
        // A name that came with the image (load, pull) is no tag time.
        assert_eq!(s.last_tag_time(&img.id).unwrap(), None);
        s.tag_at(&b, &img.id, "2026-01-02T03:04:05.000000006Z")
            .unwrap();
        assert_eq!(
            s.last_tag_time(&img.id).unwrap().as_deref(),
            Some("2026-01-02T03:04:05.000000006Z")
        );
        s.tag(&a, &img.id).unwrap();
        assert!(s.last_tag_time(&img.id).unwrap().is_some());
        s.untag(&a).unwrap();
        assert!(s.last_tag_time(&img.id).unwrap().is_some());
        s.untag(&b).unwrap();
        assert_eq!(s.last_tag_time(&img.id).unwrap(), None);
        assert!(!fs::read_to_string(s.root().join("refs.json"))
            .unwrap()
            .contains("tagged"));
    }

    #[test]
    fn missing_layer_refused() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path().join("root")).unwrap();
        let cfg = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [Digest::of(b"nope")]},
        }))
        .unwrap();
        assert!(matches!(s.put_config(&cfg), Err(Error::NotFound(_))));
    }
}
