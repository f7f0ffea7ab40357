//! Layer tars: the project's one deterministic tar writer and the compression-detecting reader.
//!
//! The writer produces what docker/BuildKit produce for a layer: entries sorted by name, numeric
//! ownership, no user/group names, PAX records for long names, large ids/sizes and xattrs, two
//! zero blocks at the end. With [`TarOptions::upperdir`] the directory is read as an overlayfs
//! upperdir: a `0:0` character device becomes `.wh.NAME` and an opaque directory (the
//! `overlay.opaque=y` xattr in the namespace the upperdir was mounted with, see
//! [`TarOptions::overlay_xattrs`]: `trusted.*` from a mount by root, `user.*` from a `userxattr`
//! mount in a user namespace) becomes `DIR/.wh..wh..opq`. The other namespace's `overlay.*`
//! xattrs are ordinary attributes to overlayfs, which a RUN step may set at will, so they mark
//! nothing. overlayfs's own xattrs (`trusted.overlay.*`, `user.overlay.*`) are never written.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::extract::OverlayXattrs;

/// Compression of a layer tar stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// Compression named by a layer media type (OCI or docker), if it is a layer type.
    pub fn from_media_type(mt: &str) -> Option<Self> {
        match mt {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }

    /// Detects the compression from the first bytes of a stream.
    pub fn detect(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// How entry modification times are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mtime {
    /// As found on disk (seconds).
    #[default]
    Keep,
    /// Every entry gets this time (reproducible builds).
    Fixed(i64),
    /// Times later than this are lowered to it (`SOURCE_DATE_EPOCH` semantics).
    Clamp(i64),
}

/// Options of [`write_tar`].
#[derive(Debug, Clone, Copy)]
pub struct TarOptions {
    /// Read the directory as an overlayfs upperdir (convert overlay whiteouts to `.wh.` entries).
    pub upperdir: bool,
    pub mtime: Mtime,
    pub compression: Compression,
    /// Compression level (gzip 0-9, zstd 1-22); `None` = a fast default.
    pub level: Option<i32>,
    /// Write files owned by this uid (and this gid) as owned by 0: the upperdir of a rootless
    /// sandbox, whose user namespace maps the caller to root, holds the caller's files where
    /// the container saw root's.
    pub caller_as_root: Option<(u32, u32)>,
    /// With `upperdir`: the xattr namespace the overlay was mounted with, the only one whose
    /// `overlay.opaque` marks an opaque directory (the store passes
    /// [`crate::StoreOptions::overlay_xattrs`]). Default: that of this process.
    pub overlay_xattrs: OverlayXattrs,
}

impl Default for TarOptions {
    fn default() -> Self {
        Self {
            upperdir: false,
            mtime: Mtime::Keep,
            compression: Compression::None,
            level: None,
            caller_as_root: None,
            overlay_xattrs: OverlayXattrs::current(),
        }
    }
}

/// Digests of a layer written by [`write_tar`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarDigests {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub size: u64,
    /// sha256 and size of the bytes written to the output (== diff_id/size when uncompressed).
    pub digest: Digest,
    pub compressed_size: u64,
}

/// Writes `dir` as a deterministic layer tar to `out` (see the module docs).
pub fn write_tar<W: Write>(dir: &Path, opts: &TarOptions, out: W) -> Result<TarDigests> {
    let outer = HashingWriter::new(out);
    match opts.compression {
        Compression::None => write_through(dir, opts, outer, Ok),
        Compression::Gzip => {
            let level = opts
                .level
                .map_or(crate::gzip::LAYER_LEVEL, |l| l.clamp(0, 9) as u32);
            let enc = crate::gzip::GzEncoder::new(outer, level);
            write_through(dir, opts, enc, |enc| {
                enc.finish().ctx("finish gzip stream of", dir)
            })
        }
        Compression::Zstd => {
            let enc = zstd::stream::write::Encoder::new(outer, opts.level.unwrap_or(3))
                .ctx("start zstd stream of", dir)?;
            write_through(dir, opts, enc, |enc| {
                enc.finish().ctx("finish zstd stream of", dir)
            })
        }
    }
}

/// Writes the tar of `dir` through `enc` (an encoder over the hashed output, or that output
/// itself), hashing the uncompressed stream on the way in; `finish` ends the encoder's stream
/// and hands back the hashed output.
fn write_through<W: Write, E: Write>(
    dir: &Path,
    opts: &TarOptions,
    enc: E,
    finish: impl FnOnce(E) -> Result<HashingWriter<W>>,
) -> Result<TarDigests> {
    let mut w = BufWriter::with_capacity(1 << 20, HashingWriter::new(enc));
    walk_into(dir, opts, &mut w)?;
    let inner = w.into_inner().map_err(|e| io_err(dir, e.into_error()))?;
    let (diff_id, size, enc) = inner.finish();
    let mut outer = finish(enc)?;
    outer.flush().ctx("flush tar of", dir)?;
    let (digest, compressed_size, _) = outer.finish();
    Ok(TarDigests {
        diff_id,
        size,
        digest,
        compressed_size,
    })
}

/// Whether an upperdir directory is marked opaque in `ns`, the namespace its overlay was
/// mounted with (see the module docs): the other namespace's `overlay.opaque` is an ordinary
/// xattr there, which the container could have set itself.
fn is_opaque(dir: &Path, ns: OverlayXattrs) -> bool {
    xattr::get(dir, ns.opaque())
        .ok()
        .flatten()
        .is_some_and(|v| v == b"y")
}

fn io_err(p: &Path, e: io::Error) -> Error {
    Error::io("write tar of", p, e)
}

struct Walker<'a, W: Write> {
    root: &'a Path,
    opts: &'a TarOptions,
    out: &'a mut W,
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
}

fn walk_into<W: Write>(dir: &Path, opts: &TarOptions, out: &mut W) -> Result<()> {
    let mut w = Walker {
        root: dir,
        opts,
        out,
        links: HashMap::new(),
        buf: vec![0u8; 256 * 1024],
    };
    let meta = fs::symlink_metadata(dir).ctx("stat", dir)?;
    if !meta.is_dir() {
        return Err(Error::Format(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    w.dir(dir, b"")?;
    w.out.write_all(&[0u8; 1024]).ctx("write tar of", dir)?;
    Ok(())
}

/// One header's worth of fields.
struct Entry<'a> {
    name: &'a [u8],
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: i64,
    kind: u8,
    link: &'a [u8],
    dev: (u64, u64),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl<W: Write> Walker<'_, W> {
    fn mtime(&self, m: i64) -> i64 {
        match self.opts.mtime {
            Mtime::Keep => m,
            Mtime::Fixed(t) => t,
            Mtime::Clamp(t) => m.min(t),
        }
    }

    fn dir(&mut self, path: &Path, rel: &[u8]) -> Result<()> {
        let mut names: Vec<_> = fs::read_dir(path)
            .ctx("read directory", path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .ctx("read directory", path)?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let full = path.join(&name);
            let mut child = rel.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name.as_bytes());
            self.entry(&full, &child, &name)?;
        }
        Ok(())
    }

    fn xattrs(&self, path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        let names = match xattr::list(path) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => return Ok(out),
            Err(e) => return Err(e).ctx("list xattrs of", path),
        };
        for n in names {
            let nb = n.as_bytes();
            if crate::extract::is_overlay_xattr(nb) {
                continue;
            }
            if let Some(v) = xattr::get(path, &n).ctx("read xattr of", path)? {
                out.push((nb.to_vec(), v));
            }
        }
        out.sort();
        Ok(out)
    }

    fn entry(&mut self, path: &Path, rel: &[u8], name: &OsStr) -> Result<()> {
        let meta = fs::symlink_metadata(path).ctx("stat", path)?;
        let ft = meta.file_type();
        let mtime = self.mtime(meta.mtime());
        let mode = meta.mode() & 0o7777;
        let (mut uid, mut gid) = (meta.uid(), meta.gid());
        if let Some((cu, cg)) = self.opts.caller_as_root {
            uid = if uid == cu { 0 } else { uid };
            gid = if gid == cg { 0 } else { gid };
        }
        let mut e = Entry {
            name: rel,
            mode,
            uid: uid.into(),
            gid: gid.into(),
            size: 0,
            mtime,
            kind: b'0',
            link: b"",
            dev: (0, 0),
            xattrs: Vec::new(),
        };
        if self.opts.upperdir && ft.is_char_device() && meta.rdev() == 0 {
            // An overlay whiteout: an empty regular `.wh.NAME` entry.
            let mut wh = parent_of(rel).to_vec();
            wh.extend_from_slice(b".wh.");
            wh.extend_from_slice(name.as_bytes());
            return self.header(&Entry { name: &wh, ..e });
        }
        if ft.is_dir() {
            let mut n = rel.to_vec();
            n.push(b'/');
            e.name = &n;
            e.kind = b'5';
            e.xattrs = self.xattrs(path)?;
            self.header(&e)?;
            if self.opts.upperdir && is_opaque(path, self.opts.overlay_xattrs) {
                let mut wh = n.clone();
                wh.extend_from_slice(b".wh..wh..opq");
                self.header(&Entry {
                    name: &wh,
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    size: 0,
                    mtime,
                    kind: b'0',
                    link: b"",
                    dev: (0, 0),
                    xattrs: Vec::new(),
                })?;
            }
            return self.dir(path, rel);
        }
        if ft.is_symlink() {
            let target = fs::read_link(path).ctx("read symlink", path)?;
            e.kind = b'2';
            e.link = target.as_os_str().as_bytes();
            let target = target.as_os_str().as_bytes().to_vec();
            e.link = &target;
            e.xattrs = Vec::new();
            return self.header(&e);
        }
        if ft.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.links.get(&key) {
                    let first = first.clone();
                    e.kind = b'1';
                    e.link = &first;
                    return self.header(&e);
                }
                self.links.insert(key, rel.to_vec());
            }
            e.size = meta.size();
            e.xattrs = self.xattrs(path)?;
            self.header(&e)?;
            let mut f = File::open(path).ctx("open", path)?;
            let mut left = e.size;
            while left > 0 {
                let want = left.min(self.buf.len() as u64) as usize;
                let n = f.read(&mut self.buf[..want]).ctx("read", path)?;
                if n == 0 {
                    return Err(Error::Format(format!(
                        "{} shrank while being archived; retry when nothing writes to it",
                        path.display()
                    )));
                }
                self.out
                    .write_all(&self.buf[..n])
                    .ctx("write tar entry for", path)?;
                left -= n as u64;
            }
            let pad = padding(e.size);
            self.out
                .write_all(&[0u8; 512][..pad])
                .ctx("write tar entry for", path)?;
            return Ok(());
        }
        if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            e.kind = if ft.is_char_device() {
                b'3'
            } else if ft.is_block_device() {
                b'4'
            } else {
                b'6'
            };
            let rdev = meta.rdev();
            e.dev = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
            return self.header(&e);
        }
        // Sockets and other special files have no tar representation; docker skips them too.
        let _ = self.root;
        Ok(())
    }

    fn header(&mut self, e: &Entry<'_>) -> Result<()> {
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let ascii = |b: &[u8]| b.iter().all(|c| c.is_ascii() && *c != 0);
        if e.name.len() > 100 || !ascii(e.name) {
            pax.push((b"path".to_vec(), e.name.to_vec()));
        }
        if e.link.len() > 100 || !ascii(e.link) {
            pax.push((b"linkpath".to_vec(), e.link.to_vec()));
        }
        const MAX7: u64 = 0o7777777;
        const MAX11: u64 = 0o77777777777;
        if e.uid > MAX7 {
            pax.push((b"uid".to_vec(), e.uid.to_string().into_bytes()));
        }
        if e.gid > MAX7 {
            pax.push((b"gid".to_vec(), e.gid.to_string().into_bytes()));
        }
        if e.size > MAX11 {
            pax.push((b"size".to_vec(), e.size.to_string().into_bytes()));
        }
        if e.mtime < 0 || e.mtime as u64 > MAX11 {
            pax.push((b"mtime".to_vec(), e.mtime.to_string().into_bytes()));
        }
        for (k, v) in &e.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax.push((key, v.clone()));
        }
        if !pax.is_empty() {
            let mut data = Vec::new();
            for (k, v) in &pax {
                let body = k.len() + v.len() + 3; // ' ' '=' '\n'
                let mut len = body + body.to_string().len();
                if len.to_string().len() != body.to_string().len() {
                    len = body + len.to_string().len();
                }
                data.extend_from_slice(len.to_string().as_bytes());
                data.push(b' ');
                data.extend_from_slice(k);
                data.push(b'=');
                data.extend_from_slice(v);
                data.push(b'\n');
            }
            let base = e
                .name
                .rsplit(|c| *c == b'/')
                .find(|s| !s.is_empty())
                .unwrap_or(b"x");
            let mut pname = b"PaxHeaders.0/".to_vec();
            pname.extend_from_slice(&base[..base.len().min(80)]);
            if !ascii(&pname) {
                pname = b"PaxHeaders.0/entry".to_vec();
            }
            let h = ustar(
                &pname,
                0o644,
                0,
                0,
                data.len() as u64,
                e.mtime.clamp(0, MAX11 as i64),
                b'x',
                b"",
                (0, 0),
            );
            self.write(&h)?;
            self.write(&data)?;
            self.write(&[0u8; 512][..padding(data.len() as u64)])?;
        }
        let h = ustar(
            &e.name[..e.name.len().min(100)],
            e.mode,
            e.uid.min(MAX7),
            e.gid.min(MAX7),
            e.size.min(MAX11),
            e.mtime.clamp(0, MAX11 as i64),
            e.kind,
            &e.link[..e.link.len().min(100)],
            e.dev,
        );
        self.write(&h)
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b).ctx("write tar of", self.root)
    }
}

fn parent_of(rel: &[u8]) -> &[u8] {
    match rel.iter().rposition(|c| *c == b'/') {
        Some(i) => &rel[..=i],
        None => b"",
    }
}

fn padding(size: u64) -> usize {
    ((512 - (size % 512)) % 512) as usize
}

fn octal(field: &mut [u8], v: u64) {
    let w = field.len() - 1;
    let s = format!("{v:0w$o}");
    field[..w].copy_from_slice(&s.as_bytes()[s.len() - w..]);
    field[w] = 0;
}

/// Builds one ustar header block.
#[allow(clippy::too_many_arguments)]
pub(crate) fn ustar(
    name: &[u8],
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: i64,
    kind: u8,
    link: &[u8],
    dev: (u64, u64),
) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], mode.into());
    octal(&mut h[108..116], uid);
    octal(&mut h[116..124], gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime as u64);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if kind == b'3' || kind == b'4' {
        octal(&mut h[329..337], dev.0);
        octal(&mut h[337..345], dev.1);
    }
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// Writes a tar header for a regular file of `size` bytes named `name` (used by the archive
/// writer of `lade save`, which streams blob files after it). Long names get a PAX record.
pub(crate) fn file_header(name: &str, size: u64, mtime: i64) -> Vec<u8> {
    standalone_header(name.as_bytes(), 0o644, size, mtime, b'0')
}

/// Directory header (name without trailing slash is fine; one is added).
pub(crate) fn dir_header(name: &str, mtime: i64) -> Vec<u8> {
    let n = format!("{}/", name.trim_end_matches('/'));
    standalone_header(n.as_bytes(), 0o755, 0, mtime, b'5')
}

/// The header (with a PAX record when needed) of one root-owned entry, outside any walk.
fn standalone_header(name: &[u8], mode: u32, size: u64, mtime: i64, kind: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = Walker {
        root: Path::new(""),
        opts: &TarOptions::default(),
        out: &mut out,
        links: HashMap::new(),
        buf: Vec::new(),
    };
    // Writing into a Vec cannot fail.
    let _ = w.header(&Entry {
        name,
        mode,
        uid: 0,
        gid: 0,
        size,
        mtime,
        kind,
        link: b"",
        dev: (0, 0),
        xattrs: Vec::new(),
    });
    out
}

pub(crate) fn tar_padding(size: u64) -> &'static [u8] {
    &[0u8; 512][..padding(size)]
}

/// Wraps a (possibly compressed) stream in the matching decompressor: gzip (incl. multi-member),
/// zstd or none, detected from the first bytes. Returns what was detected.
pub fn decompress<'a, R: BufRead + Send + 'a>(
    mut r: R,
) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    let head = r.fill_buf()?;
    let c = Compression::detect(head);
    let reader: Box<dyn Read + Send + 'a> = match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
    };
    Ok((c, reader))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn entries(tar: &[u8]) -> Vec<(String, u8, u64, String)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    String::from_utf8(e.path_bytes().to_vec()).unwrap(),
                    h.entry_type().as_byte(),
                    h.size().unwrap(),
                    e.link_name_bytes()
                        .map(|l| String::from_utf8(l.to_vec()).unwrap())
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    fn sample(dir: &Path) {
        fs::create_dir_all(dir.join("b/sub")).unwrap();
        fs::write(dir.join("a.txt"), b"hello").unwrap();
        fs::write(dir.join("b/sub/f"), vec![7u8; 1000]).unwrap();
        symlink("/etc/passwd", dir.join("abs")).unwrap();
        fs::hard_link(dir.join("a.txt"), dir.join("z-link")).unwrap();
        let long = "n".repeat(150);
        fs::write(dir.join(&long), b"long").unwrap();
    }

    #[test]
    fn deterministic_sorted_with_links_and_long_names() {
        let t = tempfile::tempdir().unwrap();
        sample(t.path());
        let mut a = Vec::new();
        let d1 = write_tar(t.path(), &TarOptions::default(), &mut a).unwrap();
        let mut b = Vec::new();
        let d2 = write_tar(t.path(), &TarOptions::default(), &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(d1, d2);
        assert_eq!(d1.diff_id, Digest::of(&a));
        assert_eq!(d1.size, a.len() as u64);
        let e = entries(&a);
        let names: Vec<_> = e.iter().map(|x| x.0.clone()).collect();
        let long = "n".repeat(150);
        assert_eq!(
            names,
            vec![
                "a.txt",
                "abs",
                "b/",
                "b/sub/",
                "b/sub/f",
                long.as_str(),
                "z-link"
            ]
        );
        assert_eq!(e[1].1, b'2');
        assert_eq!(e[1].3, "/etc/passwd");
        assert_eq!(e[6].1, b'1');
        assert_eq!(e[6].3, "a.txt");
        assert_eq!(e[4].2, 1000);
    }

    #[test]
    fn compressed_round_trip_and_detect() {
        let t = tempfile::tempdir().unwrap();
        sample(t.path());
        let mut plain = Vec::new();
        let p = write_tar(t.path(), &TarOptions::default(), &mut plain).unwrap();
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut out = Vec::new();
            let opts = TarOptions {
                compression: c,
                ..Default::default()
            };
            let d = write_tar(t.path(), &opts, &mut out).unwrap();
            assert_eq!(d.diff_id, p.diff_id);
            assert_eq!(d.digest, Digest::of(&out));
            assert_ne!(d.digest, d.diff_id);
            let (det, mut r) = decompress(&out[..]).unwrap();
            assert_eq!(det, c);
            let mut back = Vec::new();
            r.read_to_end(&mut back).unwrap();
            assert_eq!(back, plain);
        }
        let (det, _) = decompress(&plain[..]).unwrap();
        assert_eq!(det, Compression::None);
    }

    #[test]
    fn fixed_mtime_and_pax_xattrs() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("f"), b"x").unwrap();
        let has_xattr = xattr::set(t.path().join("f"), "user.lade", b"v").is_ok();
        let mut out = Vec::new();
        let opts = TarOptions {
            mtime: Mtime::Fixed(1234),
            ..Default::default()
        };
        write_tar(t.path(), &opts, &mut out).unwrap();
        let mut a = tar::Archive::new(&out[..]);
        let mut e = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.header().mtime().unwrap(), 1234);
        if has_xattr {
            let pax: Vec<_> = e
                .pax_extensions()
                .unwrap()
                .unwrap()
                .map(|x| x.unwrap().key().unwrap().to_string())
                .collect();
            assert_eq!(pax, vec!["SCHILY.xattr.user.lade"]);
        }
    }

    #[test]
    fn upperdir_whiteouts() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("opq")).unwrap();
        fs::write(t.path().join("opq/new"), b"n").unwrap();
        let can = nix::sys::stat::mknod(
            &t.path().join("gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .is_ok()
            && xattr::set(t.path().join("opq"), "trusted.overlay.opaque", b"y").is_ok();
        assert!(can, "this test needs root (mknod, trusted.* xattrs)");
        let mut out = Vec::new();
        let opts = TarOptions {
            upperdir: true,
            overlay_xattrs: OverlayXattrs::Trusted,
            ..Default::default()
        };
        write_tar(t.path(), &opts, &mut out).unwrap();
        let names: Vec<_> = entries(&out).into_iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            vec![".wh.gone", "opq/", "opq/.wh..wh..opq", "opq/new"]
        );
    }

    /// An upperdir from a `userxattr` mount (a rootless sandbox) marks opaque directories with
    /// `user.overlay.opaque`: the same `.wh..wh..opq`, and no overlay xattr of either namespace
    /// in the tar (a plain `user.*` one is kept).
    #[test]
    fn upperdir_opaque_in_the_user_namespace() {
        let t = tempfile::tempdir().unwrap();
        for d in ["opq", "plain", "both"] {
            fs::create_dir(t.path().join(d)).unwrap();
        }
        xattr::set(t.path().join("opq"), "user.overlay.opaque", b"y").unwrap();
        xattr::set(t.path().join("opq"), "user.lade", b"kept").unwrap();
        // Other overlay metadata (and a non-`y` value) is not an opaque mark.
        xattr::set(t.path().join("plain"), "user.overlay.impure", b"y").unwrap();
        xattr::set(t.path().join("both"), "user.overlay.opaque", b"x").unwrap();
        let mut out = Vec::new();
        let opts = TarOptions {
            upperdir: true,
            overlay_xattrs: OverlayXattrs::User,
            ..Default::default()
        };
        write_tar(t.path(), &opts, &mut out).unwrap();
        let names: Vec<_> = entries(&out).into_iter().map(|e| e.0).collect();
        assert_eq!(names, vec!["both/", "opq/", "opq/.wh..wh..opq", "plain/"]);
        let mut a = tar::Archive::new(&out[..]);
        let mut keys = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if let Some(pax) = e.pax_extensions().unwrap() {
                for x in pax {
                    keys.push(x.unwrap().key().unwrap().to_string());
                }
            }
        }
        assert_eq!(keys, vec!["SCHILY.xattr.user.lade"]);
        // A rootless sandbox's upperdir: the caller's files are root's in the layer.
        std::os::unix::fs::chown(t.path().join("opq"), Some(65534), Some(65534)).unwrap();
        std::os::unix::fs::chown(t.path().join("plain"), Some(1234), Some(65534)).unwrap();
        let mut out = Vec::new();
        let opts = TarOptions {
            upperdir: true,
            caller_as_root: Some((65534, 65534)),
            overlay_xattrs: OverlayXattrs::User,
            ..Default::default()
        };
        write_tar(t.path(), &opts, &mut out).unwrap();
        let owners: Vec<(String, u64, u64)> = tar::Archive::new(&out[..])
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                )
            })
            .filter(|(n, _, _)| n == "opq/" || n == "plain/")
            .collect();
        assert_eq!(
            owners,
            vec![("opq/".into(), 0, 0), ("plain/".into(), 1234, 0)]
        );
        // Not an upperdir (a plain directory imported as a layer): no whiteouts made up.
        let mut out = Vec::new();
        write_tar(t.path(), &TarOptions::default(), &mut out).unwrap();
        let names: Vec<_> = entries(&out).into_iter().map(|e| e.0).collect();
        assert_eq!(names, vec!["both/", "opq/", "plain/"]);
    }

    /// Only the namespace the upperdir was mounted with marks opaque directories: on a
    /// `trusted.*` mount, `setfattr -n user.overlay.opaque -v y DIR` in a RUN step is an
    /// ordinary xattr, not a whiteout of the layers below (and the reverse for a `userxattr`
    /// mount). Neither namespace's overlay xattr reaches the tar.
    #[test]
    fn upperdir_opaque_only_in_the_mount_namespace() {
        let t = tempfile::tempdir().unwrap();
        for d in ["t", "u"] {
            fs::create_dir(t.path().join(d)).unwrap();
            fs::write(t.path().join(d).join("f"), b"f").unwrap();
        }
        xattr::set(t.path().join("u"), "user.overlay.opaque", b"y").unwrap();
        assert!(
            xattr::set(t.path().join("t"), "trusted.overlay.opaque", b"y").is_ok(),
            "this test needs root (trusted.* xattrs)"
        );
        let names = |ns| {
            let mut out = Vec::new();
            let opts = TarOptions {
                upperdir: true,
                overlay_xattrs: ns,
                ..Default::default()
            };
            write_tar(t.path(), &opts, &mut out).unwrap();
            let mut a = tar::Archive::new(&out[..]);
            for e in a.entries().unwrap() {
                let mut e = e.unwrap();
                assert!(e.pax_extensions().unwrap().is_none(), "no xattr in the tar");
            }
            entries(&out).into_iter().map(|e| e.0).collect::<Vec<_>>()
        };
        assert_eq!(
            names(OverlayXattrs::Trusted),
            vec!["t/", "t/.wh..wh..opq", "t/f", "u/", "u/f"]
        );
        assert_eq!(
            names(OverlayXattrs::User),
            vec!["t/", "t/f", "u/", "u/.wh..wh..opq", "u/f"]
        );
    }
}
