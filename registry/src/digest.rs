//! Content digests (`sha256:<64 hex>`) and streaming verification.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A validated OCI content digest. Only `sha256` is accepted: it is the only algorithm the
/// registries Lade talks to use, and one Lade can verify.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lower-case hex digits>`.
    pub fn parse(s: &str) -> Result<Digest> {
        let invalid = |reason: &str| Error::InvalidDigest {
            digest: s.chars().take(100).collect(),
            reason: reason.to_string(),
        };
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| invalid("expected <algorithm>:<hex>"))?;
        if alg != "sha256" {
            return Err(invalid("only sha256 digests are supported"));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("a sha256 digest has 64 lower-case hex digits"));
        }
        Ok(Digest(s.to_string()))
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(bytes).into())
    }

    fn from_sha256(raw: [u8; 32]) -> Digest {
        Digest(format!("sha256:{}", hex(&raw)))
    }

    /// `sha256`.
    pub fn algorithm(&self) -> &str {
        "sha256"
    }

    /// The 64 hex digits after `sha256:`.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Incremental sha256 with a byte count; `clone` snapshots the state (used to resume a download).
#[derive(Clone, Default)]
pub struct Hasher {
    sha: Sha256,
    len: u64,
}

impl Hasher {
    pub fn new() -> Hasher {
        Hasher::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        Digest::from_sha256(self.sha.finalize().into())
    }
}

/// Checks that content hashed by `hasher` is exactly `expected` (`size` bytes); `what` names the
/// content in the error.
pub(crate) fn verify(hasher: Hasher, expected: &Digest, size: u64, what: &str) -> Result<()> {
    let got_size = hasher.len();
    if got_size != size {
        return Err(Error::SizeMismatch {
            what: what.to_string(),
            expected: size,
            actual: got_size,
        });
    }
    let actual = hasher.finish();
    if &actual != expected {
        return Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: expected.clone(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hashes_and_formats() {
        assert_eq!(Digest::sha256_of(b"").as_str(), EMPTY);
        let mut h = Hasher::new();
        h.update(b"he");
        h.update(b"llo");
        assert_eq!(h.len(), 5);
        assert_eq!(h.finish(), Digest::sha256_of(b"hello"));
        assert_eq!(
            Digest::parse(EMPTY).unwrap().hex(),
            &EMPTY["sha256:".len()..]
        );
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            &EMPTY.to_uppercase(),
            &EMPTY.replace("sha256", "sha512"),
            &format!("{EMPTY}0"),
            "md5:d41d8cd98f00b204e9800998ecf8427e",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn verify_reports_size_then_digest() {
        let d = Digest::sha256_of(b"abc");
        let mut h = Hasher::new();
        h.update(b"abc");
        assert!(verify(h.clone(), &d, 3, "blob").is_ok());
        assert!(matches!(
            verify(h.clone(), &d, 4, "blob"),
            Err(Error::SizeMismatch { .. })
        ));
        let mut other = Hasher::new();
        other.update(b"abd");
        assert!(matches!(
            verify(other, &d, 3, "blob"),
            Err(Error::DigestMismatch { .. })
        ));
    }
}
