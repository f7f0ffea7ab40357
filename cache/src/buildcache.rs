//! The build-cache index: solver cache key -> result record, one small file per key.
//!
//! ```text
//! ROOT/buildcache/<hh>/<rest of hex>.json   record of key <hh><rest> (written by rename)
//! ROOT/buildcache/locks/<hex>               flock held while a build executes that key
//! ```
//!
//! Why one file per key rather than an embedded database: a lookup is one `open` + a read of a
//! few hundred bytes (O(1), no index to load, nothing to scan on startup), several `lade`
//! processes share the index without a server or a database-wide writer lock, and a record
//! appears atomically (temp file, fsync, rename) so a killed build never leaves a half-written
//! one. Records are only ever added or replaced whole; `lade builder prune` removes them under
//! the store's exclusive lock.
//!
//! A record names the layers its result needs ([`CacheRecord::layers`]); [`BuildCacheRoots`]
//! feeds them to garbage collection so `lade prune` keeps what the build cache references.
//! Anything else the solver needs is opaque to the store ([`CacheRecord::data`]).

use std::fs;
use std::io;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::gc::{GcRoots, Marks};
use crate::lock::{lock, LockGuard, LockKind};
use crate::store::{Store, MAX_JSON_BYTES};

/// The result of one build step as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheRecord {
    /// Layers (diffIDs, bottom first) the result needs; garbage collection keeps them.
    pub layers: Vec<Digest>,
    /// Whatever else the caller needs to reuse the result (opaque to the store).
    #[serde(default)]
    pub data: serde_json::Value,
}

fn check_key(key: &str) -> Result<()> {
    if key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(Error::Format(format!(
            "invalid build-cache key {key:?}: expected 64 hex digits"
        )))
    }
}

impl Store {
    fn cache_dir(&self) -> PathBuf {
        self.root().join("buildcache")
    }

    fn cache_path(&self, key: &str) -> PathBuf {
        self.cache_dir()
            .join(&key[..2])
            .join(format!("{}.json", &key[2..]))
    }

    /// The record of `key` (64 hex digits), `None` if there is none. A record that does not
    /// parse (a foreign or damaged file) counts as missing: it is never trusted.
    pub fn cache_lookup(&self, key: &str) -> Result<Option<CacheRecord>> {
        check_key(key)?;
        let p = self.cache_path(key);
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx("read build-cache record", p),
        };
        if bytes.len() as u64 > MAX_JSON_BYTES {
            return Ok(None);
        }
        Ok(serde_json::from_slice(&bytes).ok())
    }

    /// Records the result of `key`, replacing any previous record. Pending renames (the layers
    /// the record names) are fsynced first, so a record never outlives its content.
    pub fn cache_record(&self, key: &str, rec: &CacheRecord) -> Result<()> {
        check_key(key)?;
        for l in &rec.layers {
            self.require_layer(l)?;
        }
        let p = self.cache_path(key);
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir).ctx("create build-cache directory", dir)?;
        }
        self.sync()?;
        let json = serde_json::to_vec(rec).map_err(|e| Error::Json {
            what: format!("build-cache record {key}"),
            source: e,
        })?;
        self.write_atomic(&p, &json)
    }

    /// Takes the per-key lock (blocking while another process holds it). Two builds sharing a
    /// store hold it around executing a key, so each key executes once.
    pub fn cache_lock(&self, key: &str) -> Result<LockGuard> {
        check_key(key)?;
        let dir = self.cache_dir().join("locks");
        fs::create_dir_all(&dir).ctx("create build-cache lock directory", &dir)?;
        lock(&dir.join(key), LockKind::Exclusive, true, self.root())
    }

    /// Every record (key, record); unreadable records are skipped.
    pub fn cache_entries(&self) -> Result<Vec<(String, CacheRecord)>> {
        let mut out = Vec::new();
        let dir = self.cache_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).ctx("read build-cache directory", dir),
        };
        for sub in rd {
            let sub = sub.ctx("read build-cache directory", &dir)?;
            let name = sub.file_name().to_string_lossy().into_owned();
            if name.len() != 2 || !sub.path().is_dir() {
                continue;
            }
            let rd2 = fs::read_dir(sub.path()).ctx("read build-cache directory", sub.path())?;
            for f in rd2 {
                let f = f.ctx("read build-cache directory", sub.path())?;
                let fname = f.file_name().to_string_lossy().into_owned();
                let Some(rest) = fname.strip_suffix(".json") else {
                    continue;
                };
                let key = format!("{name}{rest}");
                if check_key(&key).is_err() {
                    continue;
                }
                if let Ok(Some(rec)) = self.cache_lookup(&key) {
                    out.push((key, rec));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Bytes on disk the build-cache index takes (what [`Store::cache_clear`] frees).
    pub fn cache_disk_usage(&self) -> u64 {
        crate::gc::disk_usage(&self.cache_dir())
    }

    /// Removes every build-cache record and lock file (`lade builder prune`). Needs the
    /// exclusive store lock so no build is using them. Returns the number of records removed.
    pub fn cache_clear(&self) -> Result<usize> {
        if !self.is_exclusive() {
            return Err(Error::Format(
                "clearing the build cache needs the store opened exclusively".into(),
            ));
        }
        let n = self.cache_entries()?.len();
        let dir = self.cache_dir();
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e).ctx("remove build cache", dir),
        }
    }
}

/// GC roots of the build cache: the layers every record names.
#[derive(Debug, Default, Clone, Copy)]
pub struct BuildCacheRoots;

impl GcRoots for BuildCacheRoots {
    fn mark(&self, store: &Store, marks: &mut Marks) -> Result<()> {
        for (_, rec) in store.cache_entries()? {
            marks.layers.extend(rec.layers);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tarfmt::TarOptions;

    #[test]
    fn record_lookup_roots_and_clear() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let key = "ab".repeat(32);
        let src = t.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f"), b"x").unwrap();
        {
            let s = Store::open(&root).unwrap();
            assert!(s.cache_lookup(&key).unwrap().is_none());
            assert!(s.cache_lookup("zz").is_err());
            let l = s.add_layer_from_dir(&src, &TarOptions::default()).unwrap();
            let rec = CacheRecord {
                layers: vec![l.diff_id.clone()],
                data: serde_json::json!({"created": "x"}),
            };
            // a record naming an unknown layer is refused
            let bad = CacheRecord {
                layers: vec![Digest::of(b"nope")],
                data: serde_json::Value::Null,
            };
            assert!(s.cache_record(&key, &bad).is_err());
            s.cache_record(&key, &rec).unwrap();
            assert_eq!(s.cache_lookup(&key).unwrap(), Some(rec.clone()));
            {
                let _g = s.cache_lock(&key).unwrap();
            }
            // a damaged record is a miss
            let other = "cd".repeat(32);
            fs::create_dir_all(s.cache_path(&other).parent().unwrap()).unwrap();
            fs::write(s.cache_path(&other), b"{not json").unwrap();
            assert!(s.cache_lookup(&other).unwrap().is_none());
            assert_eq!(s.cache_entries().unwrap().len(), 1);
        }
        let s = Store::open_exclusive(&root).unwrap();
        // prune keeps the layer the build cache names
        let rep = s.prune(&[&BuildCacheRoots], false).unwrap();
        assert_eq!(rep.layers, 0);
        assert_eq!(s.cache_clear().unwrap(), 1);
        let rep = s.prune(&[&BuildCacheRoots], false).unwrap();
        assert_eq!(rep.layers, 1);
        assert!(s.cache_lookup(&key).unwrap().is_none());
    }
}
