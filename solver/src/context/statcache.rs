//! The persistent stat cache: context-relative path → (stat fingerprint, BLAKE3 of content), so
//! a rebuild re-reads only files whose metadata changed.
//!
//! File format (all integers little-endian):
//!
//! ```text
//! magic "LADESTC\0" | version u32 = 1 | reference_ns i64 | count u64
//! count × ( path_len u32 | path bytes | dev u64 | ino u64 | size u64 | mtime_ns i64
//!           | ctime_ns i64 | mode u32 | blake3 [32] )
//! trailer: blake3 of every preceding byte [32]
//! ```
//!
//! `reference_ns` is a filesystem timestamp taken (from a freshly created file) *before* the
//! walk whose results the file holds. A record is trusted only if the file's mtime and ctime
//! are both strictly older than it (git's racy-timestamp rule, with the moment taken at the
//! start of the scan rather than at the write, which is stricter): a file changed after the
//! scan began, even within the same timestamp tick, is always re-hashed. A file that is
//! truncated, corrupt, of another version or otherwise unreadable is ignored, never trusted.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::digest::Digest;

const MAGIC: &[u8; 8] = b"LADESTC\0";
const VERSION: u32 = 1;
/// Refuse to load absurd files (a stat cache of 20,000 files is about 2 MB).
const MAX_FILE: u64 = 1 << 30;

/// The metadata that must be unchanged for a recorded hash to be reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub mode: u32,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Record {
    pub fp: Fingerprint,
    pub hash: Digest,
}

/// How loading went (for diagnostics and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadStatus {
    /// No stat cache path was given.
    Disabled,
    /// The file does not exist yet.
    Missing,
    Loaded {
        records: usize,
    },
    /// The file exists but was not trusted (corrupt, truncated, other version...).
    Ignored {
        reason: String,
    },
}

#[derive(Debug, Default)]
pub(crate) struct StatCache {
    pub reference_ns: i64,
    pub records: HashMap<PathBuf, Record>,
}

impl StatCache {
    /// The record for `path` if it may be trusted for a file with fingerprint `fp`.
    pub fn lookup(&self, path: &Path, fp: &Fingerprint) -> Option<Digest> {
        let r = self.records.get(path)?;
        if r.fp != *fp {
            return None;
        }
        // racy: changed at or after the moment the scan that recorded it began
        if fp.mtime_ns >= self.reference_ns || fp.ctime_ns >= self.reference_ns {
            return None;
        }
        Some(r.hash)
    }

    pub fn load(path: &Path) -> (StatCache, LoadStatus) {
        let bytes = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (StatCache::default(), LoadStatus::Missing)
            }
            Err(e) => return ignored(format!("cannot stat: {e}")),
            Ok(m) if m.len() > MAX_FILE => return ignored("too large".into()),
            Ok(_) => match std::fs::read(path) {
                Ok(b) => b,
                Err(e) => return ignored(format!("cannot read: {e}")),
            },
        };
        match decode(&bytes) {
            Some(c) => {
                let n = c.records.len();
                (c, LoadStatus::Loaded { records: n })
            }
            None => ignored("corrupt or written by another version".into()),
        }
    }

    /// Writes atomically: temp file in the same directory, fsync, rename, fsync directory.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".statcache-")
            .tempfile_in(dir)?;
        tmp.write_all(&encode(self))?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }
}

fn ignored(reason: String) -> (StatCache, LoadStatus) {
    (StatCache::default(), LoadStatus::Ignored { reason })
}

/// A timestamp from the filesystem's own clock (what mtimes and ctimes are made of), read from
/// a file created now in `dir`.
pub(crate) fn fs_now(dir: &Path) -> std::io::Result<i64> {
    std::fs::create_dir_all(dir)?;
    let probe = tempfile::Builder::new()
        .prefix(".statcache-probe-")
        .tempfile_in(dir)?;
    let m = probe.as_file().metadata()?;
    use std::os::unix::fs::MetadataExt;
    Ok(m.mtime() * 1_000_000_000 + m.mtime_nsec())
}

fn encode(c: &StatCache) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::with_capacity(32 + c.records.len() * 120);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&c.reference_ns.to_le_bytes());
    out.extend_from_slice(&(c.records.len() as u64).to_le_bytes());
    let mut paths: Vec<_> = c.records.keys().collect();
    paths.sort();
    for p in paths {
        let r = &c.records[p];
        let pb = p.as_os_str().as_bytes();
        out.extend_from_slice(&(pb.len() as u32).to_le_bytes());
        out.extend_from_slice(pb);
        out.extend_from_slice(&r.fp.dev.to_le_bytes());
        out.extend_from_slice(&r.fp.ino.to_le_bytes());
        out.extend_from_slice(&r.fp.size.to_le_bytes());
        out.extend_from_slice(&r.fp.mtime_ns.to_le_bytes());
        out.extend_from_slice(&r.fp.ctime_ns.to_le_bytes());
        out.extend_from_slice(&r.fp.mode.to_le_bytes());
        out.extend_from_slice(r.hash.as_bytes());
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn arr<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u32(&mut self) -> Option<u32> {
        self.arr().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.arr().map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.arr().map(i64::from_le_bytes)
    }
}

fn decode(bytes: &[u8]) -> Option<StatCache> {
    use std::os::unix::ffi::OsStrExt;
    if bytes.len() < 32 {
        return None;
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(body).as_bytes() != sum {
        return None;
    }
    let mut r = Reader(body);
    if r.take(8)? != MAGIC || r.u32()? != VERSION {
        return None;
    }
    let reference_ns = r.i64()?;
    let count = r.u64()?;
    let mut records = HashMap::new();
    for _ in 0..count {
        let len = usize::try_from(r.u32()?).ok()?;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(r.take(len)?));
        let fp = Fingerprint {
            dev: r.u64()?,
            ino: r.u64()?,
            size: r.u64()?,
            mtime_ns: r.i64()?,
            ctime_ns: r.i64()?,
            mode: r.u32()?,
        };
        let hash = Digest(r.arr()?);
        records.insert(path, Record { fp, hash });
    }
    if !r.0.is_empty() {
        return None;
    }
    Some(StatCache {
        reference_ns,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(mtime: i64, ctime: i64) -> Fingerprint {
        Fingerprint {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: mtime,
            ctime_ns: ctime,
            mode: 0o100644,
        }
    }

    fn sample() -> StatCache {
        let mut c = StatCache {
            reference_ns: 1000,
            ..Default::default()
        };
        c.records.insert(
            PathBuf::from("a/b"),
            Record {
                fp: fp(10, 20),
                hash: Digest::of(b"x"),
            },
        );
        c
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/stat");
        sample().save(&p).unwrap();
        let (c, status) = StatCache::load(&p);
        assert_eq!(status, LoadStatus::Loaded { records: 1 });
        assert_eq!(c.reference_ns, 1000);
        assert_eq!(
            c.lookup(Path::new("a/b"), &fp(10, 20)),
            Some(Digest::of(b"x"))
        );
        assert_eq!(c.lookup(Path::new("a/b"), &fp(11, 20)), None);
        assert_eq!(c.lookup(Path::new("a/c"), &fp(10, 20)), None);
    }

    #[test]
    fn racy_records_are_not_trusted() {
        let c = sample();
        let mut racy = c.records[Path::new("a/b")];
        for (m, ct, trusted) in [
            (10, 20, true),
            (999, 999, true),
            (1000, 20, false),
            (10, 1000, false),
            (10, 5000, false),
        ] {
            racy.fp = fp(m, ct);
            let mut c2 = StatCache {
                reference_ns: c.reference_ns,
                ..Default::default()
            };
            c2.records.insert(PathBuf::from("f"), racy);
            assert_eq!(
                c2.lookup(Path::new("f"), &fp(m, ct)).is_some(),
                trusted,
                "mtime {m} ctime {ct}"
            );
        }
    }

    #[test]
    fn corrupt_truncated_or_foreign_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stat");
        sample().save(&p).unwrap();
        let good = std::fs::read(&p).unwrap();
        let mut variants: Vec<Vec<u8>> = vec![
            good[..good.len() - 1].to_vec(),
            good[..10].to_vec(),
            Vec::new(),
            b"garbage".repeat(20),
        ];
        let mut flipped = good.clone();
        flipped[40] ^= 1;
        variants.push(flipped);
        // another version with a valid checksum
        let mut other = good[..good.len() - 32].to_vec();
        other[8] = 2;
        let sum = blake3::hash(&other);
        other.extend_from_slice(sum.as_bytes());
        variants.push(other);
        for (i, v) in variants.into_iter().enumerate() {
            std::fs::write(&p, v).unwrap();
            let (c, status) = StatCache::load(&p);
            assert!(
                matches!(status, LoadStatus::Ignored { .. }),
                "variant {i}: {status:?}"
            );
            assert!(c.records.is_empty());
        }
        assert_eq!(
            StatCache::load(&dir.path().join("none")).1,
            LoadStatus::Missing
        );
    }
}
