//! What the store knows about blobs on registries (`remotes.json`).
//!
//! Per registry, per blob digest: its size and media type, the layer it holds (diffID) when it
//! is a layer, and the repositories seen holding it (pulled from or pushed to), most recent
//! first. The registry crate reads it to mount a blob from another repository of the same
//! registry instead of uploading it, and to reuse a registry's compressed blob of a layer the
//! store has only in another form. It is knowledge, not content: an entry may be stale (the
//! registry may have deleted the blob), so every user must fall back to uploading.
//!
//! One small JSON file, read without a lock (it is only ever replaced by rename) and rewritten
//! under `remotes.lock`; `lade prune` drops the entries of layers and images it removes.

use std::collections::BTreeMap;
use std::fs;
use std::io;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::gc::Marks;
use crate::lock::{lock, LockKind};
use crate::store::{Store, MAX_JSON_BYTES};

/// Repositories remembered per blob (the most recent ones).
pub const MAX_REPOSITORIES: usize = 8;

/// A blob known to exist on a registry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteBlob {
    pub size: u64,
    #[serde(default, rename = "mediaType", skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The layer this blob holds (compressed or not), when it is a layer.
    #[serde(default, rename = "diffID", skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<Digest>,
    /// Repositories on the registry known to hold the blob, most recently seen first.
    pub repositories: Vec<String>,
}

/// One observation for [`Store::record_remote_blobs`]: `digest` is in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobSighting {
    pub digest: Digest,
    pub size: u64,
    pub media_type: Option<String>,
    pub diff_id: Option<Digest>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct RemoteIndex {
    version: u32,
    /// registry (as in `Reference::registry`) -> blob digest -> what is known.
    registries: BTreeMap<String, BTreeMap<Digest, RemoteBlob>>,
}

impl Store {
    fn remotes_path(&self) -> std::path::PathBuf {
        self.root().join("remotes.json")
    }

    fn read_remotes(&self) -> Result<RemoteIndex> {
        let p = self.remotes_path();
        match fs::read(&p) {
            Ok(b) if b.len() as u64 > MAX_JSON_BYTES => Err(Error::TooLarge {
                what: p.display().to_string(),
                limit: MAX_JSON_BYTES,
                setting: None,
            }),
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::Json {
                what: p.display().to_string(),
                source: e,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RemoteIndex {
                version: 1,
                registries: BTreeMap::new(),
            }),
            Err(e) => Err(e).ctx("read", p),
        }
    }

    fn update_remotes(&self, f: impl FnOnce(&mut RemoteIndex)) -> Result<()> {
        let _g = lock(
            &self.root().join("remotes.lock"),
            LockKind::Exclusive,
            true,
            self.root(),
        )?;
        // A damaged file is knowledge lost, not an error: start over.
        let mut idx = self.read_remotes().unwrap_or_default();
        let before = idx.clone();
        f(&mut idx);
        if idx == before {
            return Ok(());
        }
        idx.version = 1;
        let json = serde_json::to_vec(&idx).map_err(|e| Error::Json {
            what: "remotes.json".into(),
            source: e,
        })?;
        self.write_atomic(&self.remotes_path(), &json)
    }

    /// Every blob the store knows to be on `registry`. A missing or unreadable record is empty.
    pub fn remote_blobs(&self, registry: &str) -> BTreeMap<Digest, RemoteBlob> {
        self.read_remotes()
            .ok()
            .and_then(|mut i| i.registries.remove(registry))
            .unwrap_or_default()
    }

    /// Remembers that `repository` on `registry` holds these blobs (moving it to the front of
    /// each blob's repository list, keeping at most [`MAX_REPOSITORIES`]).
    pub fn record_remote_blobs(
        &self,
        registry: &str,
        repository: &str,
        blobs: &[BlobSighting],
    ) -> Result<()> {
        if blobs.is_empty() {
            return Ok(());
        }
        self.update_remotes(|idx| {
            let reg = idx.registries.entry(registry.to_string()).or_default();
            for b in blobs {
                let e = reg.entry(b.digest.clone()).or_insert_with(|| RemoteBlob {
                    size: b.size,
                    media_type: None,
                    diff_id: None,
                    repositories: Vec::new(),
                });
                e.size = b.size;
                if b.media_type.is_some() {
                    e.media_type.clone_from(&b.media_type);
                }
                if b.diff_id.is_some() {
                    e.diff_id.clone_from(&b.diff_id);
                }
                e.repositories.retain(|r| r != repository);
                e.repositories.insert(0, repository.to_string());
                e.repositories.truncate(MAX_REPOSITORIES);
            }
        })
    }

    /// Forgets that `repository` on `registry` holds `digest` (a mount from it failed).
    pub fn forget_remote_blob(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
    ) -> Result<()> {
        self.update_remotes(|idx| {
            if let Some(reg) = idx.registries.get_mut(registry) {
                if let Some(e) = reg.get_mut(digest) {
                    e.repositories.retain(|r| r != repository);
                    if e.repositories.is_empty() {
                        reg.remove(digest);
                    }
                }
            }
        })
    }

    /// Drops what prune is removing: entries of layers not kept, and of other blobs (configs)
    /// not kept.
    pub(crate) fn prune_remotes(&self, marks: &Marks) -> Result<()> {
        if !self.remotes_path().exists() {
            return Ok(());
        }
        self.update_remotes(|idx| {
            for reg in idx.registries.values_mut() {
                reg.retain(|d, b| match &b.diff_id {
                    Some(l) => marks.layers.contains(l),
                    None => marks.blobs.contains(d),
                });
            }
            idx.registries.retain(|_, r| !r.is_empty());
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sighting(data: &[u8], diff: Option<&[u8]>) -> BlobSighting {
        BlobSighting {
            digest: Digest::of(data),
            size: data.len() as u64,
            media_type: Some("application/vnd.oci.image.layer.v1.tar+gzip".into()),
            diff_id: diff.map(Digest::of),
        }
    }

    #[test]
    fn records_repositories_most_recent_first_and_bounded() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path().join("root")).unwrap();
        assert!(s.remote_blobs("reg:5000").is_empty());
        let b = sighting(b"blob", Some(b"layer"));
        s.record_remote_blobs("reg:5000", "a", std::slice::from_ref(&b))
            .unwrap();
        s.record_remote_blobs("reg:5000", "b", std::slice::from_ref(&b))
            .unwrap();
        s.record_remote_blobs("reg:5000", "a", std::slice::from_ref(&b))
            .unwrap();
        let known = s.remote_blobs("reg:5000");
        let e = &known[&b.digest];
        assert_eq!(e.repositories, vec!["a", "b"]);
        assert_eq!(e.diff_id, Some(Digest::of(b"layer")));
        assert!(s.remote_blobs("other:5000").is_empty());
        for i in 0..20 {
            s.record_remote_blobs("reg:5000", &format!("r{i}"), std::slice::from_ref(&b))
                .unwrap();
        }
        let e = &s.remote_blobs("reg:5000")[&b.digest];
        assert_eq!(e.repositories.len(), MAX_REPOSITORIES);
        assert_eq!(e.repositories[0], "r19");
        s.forget_remote_blob("reg:5000", "r19", &b.digest).unwrap();
        assert_eq!(s.remote_blobs("reg:5000")[&b.digest].repositories[0], "r18");
    }

    #[test]
    fn prune_drops_entries_of_removed_layers() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path().join("root")).unwrap();
        let kept = sighting(b"kept", Some(b"kept-layer"));
        let gone = sighting(b"gone", Some(b"gone-layer"));
        let config = sighting(b"config", None);
        s.record_remote_blobs("r", "x", &[kept.clone(), gone.clone(), config.clone()])
            .unwrap();
        let mut m = Marks::default();
        m.layers.insert(Digest::of(b"kept-layer"));
        s.prune_remotes(&m).unwrap();
        let left: Vec<Digest> = s.remote_blobs("r").into_keys().collect();
        assert_eq!(left, vec![kept.digest]);
    }

    #[test]
    fn a_damaged_record_is_ignored() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path().join("root")).unwrap();
        fs::write(s.root().join("remotes.json"), b"{not json").unwrap();
        assert!(s.remote_blobs("r").is_empty());
        s.record_remote_blobs("r", "x", &[sighting(b"a", None)])
            .unwrap();
        assert_eq!(s.remote_blobs("r").len(), 1);
    }
}
