//! Garbage collection (`lade prune`) and consistency check (`lade system check`).
//!
//! Mark: every image named in `refs.json` marks its config blob and its layers; every
//! `name@digest` ref also marks that manifest blob if stored; each marked layer marks the blobs
//! of its record and its snapshot. Further roots (build-cache entries, containers, ...) come from
//! [`GcRoots`] providers passed to [`Store::prune`]. Sweep: unmarked blobs, layer records and
//! snapshots are removed, and everything in `tmp/` (the exclusive lock guarantees no other lade
//! process is writing there, so it is left over from crashed ones).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::layers::hash_file;
use crate::store::Store;

/// What the mark phase keeps.
#[derive(Debug, Default, Clone)]
pub struct Marks {
    /// Images (config digests): their config, layers and snapshots are kept.
    pub images: HashSet<Digest>,
    /// Layers (diffIDs): their record, blobs and snapshot are kept.
    pub layers: HashSet<Digest>,
    /// Any other blobs to keep (manifests, cache metadata, ...).
    pub blobs: HashSet<Digest>,
}

/// A source of GC roots besides the name index (e.g. the build cache, running containers).
pub trait GcRoots {
    /// Adds what must survive to `marks`.
    fn mark(&self, store: &Store, marks: &mut Marks) -> Result<()>;
}

/// What [`Store::prune`] removed (or would remove with `dry_run`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    pub blobs: u64,
    pub layers: u64,
    pub snapshots: u64,
    pub temp_entries: u64,
    pub bytes_freed: u64,
}

/// Result of [`Store::check`].
#[derive(Debug, Default, Clone)]
pub struct CheckReport {
    pub images: usize,
    pub blobs: usize,
    pub layers: usize,
    pub snapshots: usize,
    /// Leftovers of interrupted commands in `tmp/` (harmless; `lade prune` removes them).
    pub temp_entries: usize,
    /// Unreferenced blobs/layers/snapshots (harmless; `lade prune` removes them).
    pub unreferenced: usize,
    /// Real inconsistencies. Empty means the store is consistent.
    pub problems: Vec<String>,
}

/// Bytes on disk (allocated blocks) of `p` and everything below it, symlinks not followed;
/// 0 if it does not exist.
pub fn disk_usage(p: &Path) -> u64 {
    let Ok(m) = fs::symlink_metadata(p) else {
        return 0;
    };
    let mut n = m.blocks() * 512;
    if m.is_dir() {
        if let Ok(rd) = fs::read_dir(p) {
            for e in rd.flatten() {
                n += disk_usage(&e.path());
            }
        }
    }
    n
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => crate::store::remove_tree(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn names(dir: &Path) -> Result<Vec<String>> {
    let mut v = Vec::new();
    match fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                let e = e.ctx("read directory", dir)?;
                v.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).ctx("read directory", dir),
    }
    v.sort();
    Ok(v)
}

impl Store {
    /// Marks everything reachable from the name index and `extra` roots.
    pub fn mark(&self, extra: &[&dyn GcRoots]) -> Result<Marks> {
        let mut m = Marks::default();
        let idx = self.refs()?;
        for (k, id) in &idx.refs {
            m.images.insert(id.clone());
            if let Some((_, d)) = k.rsplit_once('@') {
                if let Ok(d) = Digest::parse(d) {
                    m.blobs.insert(d);
                }
            }
        }
        for r in extra {
            r.mark(self, &mut m)?;
        }
        for id in m.images.clone() {
            m.blobs.insert(id.clone());
            // An unreadable config keeps only itself; `check` reports it.
            if let Ok(img) = self.image_by_id(&id) {
                m.layers.extend(img.layers);
            }
        }
        for l in m.layers.clone() {
            if let Ok(Some(rec)) = self.layer(&l) {
                m.blobs.extend(rec.blobs.into_iter().map(|b| b.digest));
            }
        }
        Ok(m)
    }

    /// Removes what nothing references and reports the space freed. Needs the exclusive lock
    /// ([`Store::open_exclusive`]).
    pub fn prune(&self, extra: &[&dyn GcRoots], dry_run: bool) -> Result<PruneReport> {
        if !self.is_exclusive() {
            return Err(Error::Format(
                "prune needs the store opened exclusively (Store::open_exclusive)".into(),
            ));
        }
        let m = self.mark(extra)?;
        let mut rep = PruneReport::default();
        let root = self.root().to_path_buf();
        let rm = |p: &Path, counter: &mut u64, rep_bytes: &mut u64| -> Result<()> {
            *rep_bytes += disk_usage(p);
            *counter += 1;
            if !dry_run {
                remove_any(p).ctx("remove", p)?;
            }
            Ok(())
        };
        let mut bytes = 0u64;
        for n in names(&root.join("tmp"))? {
            rm(
                &root.join("tmp").join(&n),
                &mut rep.temp_entries,
                &mut bytes,
            )?;
        }
        for n in names(&root.join("snapshots"))? {
            let keep = Digest::from_hex(&n).is_ok_and(|d| m.layers.contains(&d));
            if !keep {
                rm(
                    &root.join("snapshots").join(&n),
                    &mut rep.snapshots,
                    &mut bytes,
                )?;
            }
        }
        for n in names(&root.join("layers/sha256"))? {
            let keep = n
                .strip_suffix(".json")
                .and_then(|h| Digest::from_hex(h).ok())
                .is_some_and(|d| m.layers.contains(&d));
            if !keep {
                rm(
                    &root.join("layers/sha256").join(&n),
                    &mut rep.layers,
                    &mut bytes,
                )?;
            }
        }
        for n in names(&root.join("blobs/sha256"))? {
            let keep = Digest::from_hex(&n).is_ok_and(|d| m.blobs.contains(&d));
            if !keep {
                rm(
                    &root.join("blobs/sha256").join(&n),
                    &mut rep.blobs,
                    &mut bytes,
                )?;
            }
        }
        if !dry_run {
            self.prune_remotes(&m)?;
        }
        rep.bytes_freed = bytes;
        Ok(rep)
    }

    /// Checks the store: every name points at a readable config whose layers all have a record
    /// with an existing blob; blob and snapshot names are valid; with `verify_content`, every
    /// blob is re-hashed. Read-only.
    pub fn check(&self, verify_content: bool) -> Result<CheckReport> {
        let mut rep = CheckReport::default();
        let idx = match self.refs() {
            Ok(i) => i,
            Err(e) => {
                rep.problems.push(format!("refs.json is unreadable: {e}"));
                return Ok(rep);
            }
        };
        let mut ids: Vec<&Digest> = idx.refs.values().collect();
        ids.sort();
        ids.dedup();
        rep.images = ids.len();
        for id in ids {
            match self.image_by_id(id) {
                Err(e) => rep.problems.push(format!("image {id}: {e}")),
                Ok(img) => {
                    for l in &img.layers {
                        match self.layer(l) {
                            Ok(Some(rec)) => {
                                if !rec.blobs.iter().any(|b| self.has_blob(&b.digest)) {
                                    rep.problems
                                        .push(format!("image {id}: layer {l} has no blob"));
                                }
                            }
                            Ok(None) => rep
                                .problems
                                .push(format!("image {id}: layer {l} is unknown")),
                            Err(e) => rep.problems.push(format!("image {id}: layer {l}: {e}")),
                        }
                    }
                }
            }
        }
        let m = self.mark(&[&crate::buildcache::BuildCacheRoots])?;
        for (key, rec) in self.cache_entries()? {
            for l in &rec.layers {
                if !matches!(self.layer(l), Ok(Some(_))) {
                    rep.problems
                        .push(format!("build-cache record {key}: layer {l} is unknown"));
                }
            }
        }
        let root = self.root();
        for n in names(&root.join("blobs/sha256"))? {
            rep.blobs += 1;
            let Ok(d) = Digest::from_hex(&n) else {
                rep.problems
                    .push(format!("blobs/sha256/{n}: not a digest name"));
                continue;
            };
            if !m.blobs.contains(&d) {
                rep.unreferenced += 1;
            }
            if verify_content {
                match hash_file(&self.blob_path(&d)) {
                    Ok((got, _)) if got == d => {}
                    Ok((got, _)) => rep.problems.push(format!("blob {d} has content {got}")),
                    Err(e) => rep.problems.push(format!("blob {d}: {e}")),
                }
            }
        }
        for n in names(&root.join("layers/sha256"))? {
            rep.layers += 1;
            match n
                .strip_suffix(".json")
                .and_then(|h| Digest::from_hex(h).ok())
            {
                Some(d) => {
                    if let Err(e) = self.layer(&d) {
                        rep.problems.push(format!("layer record {n}: {e}"));
                    }
                    if !m.layers.contains(&d) {
                        rep.unreferenced += 1;
                    }
                }
                None => rep
                    .problems
                    .push(format!("layers/sha256/{n}: not a layer record name")),
            }
        }
        for n in names(&root.join("snapshots"))? {
            rep.snapshots += 1;
            match Digest::from_hex(&n) {
                Ok(d) => {
                    if !m.layers.contains(&d) {
                        rep.unreferenced += 1;
                    }
                }
                Err(_) => rep
                    .problems
                    .push(format!("snapshots/{n}: not a snapshot name")),
            }
        }
        rep.temp_entries = names(&root.join("tmp"))?.len();
        Ok(rep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::LockKind;
    use crate::store::StoreOptions;
    use crate::tarfmt::TarOptions;
    use crate::Reference;

    struct KeepLayer(Digest);
    impl GcRoots for KeepLayer {
        fn mark(&self, _: &Store, m: &mut Marks) -> Result<()> {
            m.layers.insert(self.0.clone());
            Ok(())
        }
    }

    #[test]
    fn prune_keeps_referenced_and_extra_roots() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let src = t.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("a"), b"a").unwrap();
        let (kept, extra, gone) = {
            let s = Store::open(&root).unwrap();
            let l1 = s.add_layer_from_dir(&src, &TarOptions::default()).unwrap();
            fs::write(src.join("b"), b"b").unwrap();
            let l2 = s.add_layer_from_dir(&src, &TarOptions::default()).unwrap();
            fs::write(src.join("c"), b"c").unwrap();
            let l3 = s.add_layer_from_dir(&src, &TarOptions::default()).unwrap();
            s.ensure_snapshot(&l1.diff_id).unwrap();
            s.ensure_snapshot(&l3.diff_id).unwrap();
            let cfg: oci_spec::image::ImageConfiguration =
                serde_json::from_value(serde_json::json!({
                    "architecture": "amd64", "os": "linux",
                    "rootfs": {"type": "layers", "diff_ids": [l1.diff_id]},
                }))
                .unwrap();
            s.create_image(&cfg, Some(&Reference::parse("keep").unwrap()))
                .unwrap();
            (l1.diff_id, l2.diff_id, l3.diff_id)
        };
        // Shared lock holders block the exclusive one.
        let shared = Store::open(&root).unwrap();
        let _stale = shared.temp_dir("stale-").unwrap().keep();
        let busy = Store::open_with(
            &root,
            StoreOptions {
                wait: false,
                ..Default::default()
            },
            LockKind::Exclusive,
        );
        assert!(matches!(busy, Err(Error::Busy(_))));
        drop(shared);
        let s = Store::open_exclusive(&root).unwrap();
        let dry = s.prune(&[&KeepLayer(extra.clone())], true).unwrap();
        assert!(s.has_snapshot(&gone));
        let rep = s.prune(&[&KeepLayer(extra.clone())], false).unwrap();
        assert_eq!(dry, rep);
        assert_eq!(rep.temp_entries, 1);
        assert_eq!(rep.snapshots, 1);
        assert_eq!(rep.layers, 1);
        assert_eq!(rep.blobs, 1);
        assert!(rep.bytes_freed > 0);
        assert!(s.has_snapshot(&kept));
        assert!(!s.has_snapshot(&gone));
        assert!(s.layer(&extra).unwrap().is_some());
        assert!(s.layer(&gone).unwrap().is_none());
        let c = s.check(true).unwrap();
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(c.images, 1);
    }
}
