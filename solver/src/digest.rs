//! BLAKE3 digests and a canonical, length-prefixed encoder for hashing structured data.
//!
//! Every hash the solver computes (cache keys, context selection digests, and the definition
//! digests the lowering layer builds) goes through [`DigestBuilder`], whose encoding is
//! unambiguous: fixed-size fields are written raw, variable-size fields are prefixed with their
//! length as a little-endian `u64`, and every builder starts from a BLAKE3 `derive_key` context
//! string that names the purpose and the encoding version. Changing an encoding means changing
//! its context string, which changes every digest produced with it.

use std::fmt;

/// A 32-byte BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// BLAKE3 (unkeyed, default mode) of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        lade_cache::digest::hex(&self.0)
    }

    /// Parses 64 hex characters (either case); `None` otherwise.
    pub fn from_hex(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            out[i] = u8::try_from(hi * 16 + lo).ok()?;
        }
        Some(Digest(out))
    }
}

impl From<blake3::Hash> for Digest {
    fn from(h: blake3::Hash) -> Self {
        Digest(*h.as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blake3:{}", self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Canonical encoder feeding a BLAKE3 hasher in `derive_key` mode.
///
/// ```
/// use lade_solver::DigestBuilder;
/// // what the lowering layer might do for a RUN step
/// let mut b = DigestBuilder::new("lade exec op v1");
/// b.str("exec").u64(2).str("/bin/sh").str("-c").str("make");
/// let definition = b.finish();
/// assert_ne!(definition, DigestBuilder::new("lade exec op v2").finish());
/// ```
#[derive(Clone)]
pub struct DigestBuilder(blake3::Hasher);

impl DigestBuilder {
    /// Starts a digest whose purpose and encoding version are named by `context` (BLAKE3's
    /// `derive_key` context string, e.g. `"lade solver cache-key v1"`).
    pub fn new(context: &str) -> Self {
        DigestBuilder(blake3::Hasher::new_derive_key(context))
    }

    /// A variable-length byte string: `u64` little-endian length, then the bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u64(b.len() as u64);
        self.0.update(b);
        self
    }

    /// A UTF-8 string, encoded like [`DigestBuilder::bytes`].
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    /// A `u64`, 8 bytes little-endian.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.update(&v.to_le_bytes());
        self
    }

    /// A `u8` tag or flag, one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.update(&[v]);
        self
    }

    /// A digest, 32 raw bytes.
    pub fn digest(&mut self, d: &Digest) -> &mut Self {
        self.0.update(&d.0);
        self
    }

    /// An optional digest: `0x00`, or `0x01` followed by the 32 bytes.
    pub fn opt_digest(&mut self, d: Option<&Digest>) -> &mut Self {
        match d {
            None => self.u8(0),
            Some(d) => self.u8(1).digest(d),
        }
    }

    pub fn finish(&self) -> Digest {
        self.0.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let d = Digest::of(b"abc");
        assert_eq!(Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Digest::from_hex(&d.to_hex().to_uppercase()), Some(d));
        assert_eq!(Digest::from_hex("zz"), None);
        // BLAKE3 test vector for "abc"
        assert_eq!(
            d.to_hex(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
    }

    #[test]
    fn encoding_is_unambiguous() {
        let a = DigestBuilder::new("t").str("ab").str("c").finish();
        let b = DigestBuilder::new("t").str("a").str("bc").finish();
        assert_ne!(a, b);
        let none = DigestBuilder::new("t").opt_digest(None).finish();
        let zero = DigestBuilder::new("t")
            .opt_digest(Some(&Digest([0; 32])))
            .finish();
        assert_ne!(none, zero);
    }
}
