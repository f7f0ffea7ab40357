//! Image archives: `lade load` and `lade save`.
//!
//! Reads docker-archive tarballs (`docker save` of docker <= 24: `<id>/layer.tar`,
//! `<config>.json`, `manifest.json`; docker >= 25: the same `manifest.json` over an OCI layout)
//! and OCI image-layout archives (`skopeo copy ... oci-archive:`), whole-archive gzip/zstd or
//! not, in one streaming pass: every layer is staged as a blob (validated, diffID computed
//! while it is written), JSON documents are kept in memory (capped; entries are told apart by
//! name first, then by content, see `route`). Only when every config
//! and layer digest has been verified are the staged blobs renamed into the store and the names
//! written, so a refused archive leaves the store unchanged.
//!
//! Writes one tarball that is both what `docker load` reads (`manifest.json`, `repositories`)
//! and a valid OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`), as docker 25+
//! does. Layer blobs are copied from the store with `std::io::copy` (copy_file_range between
//! files).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};

use crate::digest::{read_at_most, Digest, LimitedReader};
use crate::error::{Error, IoContext, Result};
use crate::images::{media, parse_config, Image};
use crate::layers::StagedLayer;
use crate::reference::Reference;
use crate::store::{Store, MAX_JSON_BYTES};
use crate::tarfmt::{decompress, dir_header, file_header, tar_padding, Compression};

/// An image added by [`load`].
#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub id: Digest,
    /// Names given by the archive (none for an unnamed image).
    pub names: Vec<Reference>,
}

/// Cap on the whole (uncompressed) archive.
const MAX_ARCHIVE_BYTES: u64 = 1 << 40;

enum FileData<'s> {
    Json(Vec<u8>),
    Layer(Box<StagedLayer<'s>>),
}

struct Intake<'s> {
    files: HashMap<String, FileData<'s>>,
    aliases: HashMap<String, String>,
}

fn clean_name(raw: &[u8]) -> Result<String> {
    let s = String::from_utf8(raw.to_vec()).map_err(|_| {
        Error::Format(format!(
            "archive entry name {:?} is not UTF-8",
            String::from_utf8_lossy(raw)
        ))
    })?;
    let mut parts: Vec<&str> = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(Error::BadEntry {
                        entry: s.clone(),
                        reason: "archive entry points outside the archive; refusing a path-traversing archive".into(),
                    });
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

fn join_rel(base_dir: &str, target: &str) -> Result<String> {
    if target.starts_with('/') {
        return clean_name(target.as_bytes());
    }
    clean_name(format!("{base_dir}/{target}").as_bytes())
}

impl<'s> Intake<'s> {
    fn resolve(&self, name: &str) -> Result<&FileData<'s>> {
        let mut n = clean_name(name.as_bytes())?;
        for _ in 0..16 {
            if let Some(f) = self.files.get(&n) {
                return Ok(f);
            }
            match self.aliases.get(&n) {
                Some(t) => n = t.clone(),
                None => break,
            }
        }
        Err(Error::Format(format!(
            "the archive refers to {name:?} but does not contain it (truncated or incomplete archive?)"
        )))
    }

    fn json(&self, name: &str) -> Result<&[u8]> {
        match self.resolve(name)? {
            FileData::Json(b) => Ok(b),
            FileData::Layer(_) => Err(Error::Format(format!(
                "{name} in the archive is not a JSON document"
            ))),
        }
    }

    /// diffID of a layer file (a small one kept in memory is an uncompressed tar).
    fn layer_diff_id(&self, name: &str) -> Result<Digest> {
        match self.resolve(name)? {
            FileData::Layer(l) => Ok(l.diff_id.clone()),
            FileData::Json(b) => Ok(Digest::of(b)),
        }
    }

    fn layer_key(&self, name: &str) -> Result<String> {
        let mut n = clean_name(name.as_bytes())?;
        for _ in 0..16 {
            if self.files.contains_key(&n) {
                return Ok(n);
            }
            match self.aliases.get(&n) {
                Some(t) => n = t.clone(),
                None => break,
            }
        }
        Err(Error::Format(format!(
            "the archive refers to {name:?} but does not contain it"
        )))
    }
}

/// The digest a `blobs/sha256/<hex>` name promises, if it is one.
fn promised(name: &str) -> Option<Digest> {
    name.strip_prefix("blobs/sha256/")
        .and_then(|h| Digest::from_hex(h).ok())
}

fn read_json_entry<R: Read>(r: R, name: &str) -> Result<Vec<u8>> {
    read_at_most(r, MAX_JSON_BYTES)
        .map_err(|e| {
            Error::embedded_or_format(
                e,
                format_args!("archive is truncated or corrupt while reading {name}"),
            )
        })?
        .ok_or_else(|| Error::TooLarge {
            what: format!("JSON document {name} in the archive"),
            limit: MAX_JSON_BYTES,
            setting: None,
        })
}

fn stream_err(e: io::Error) -> Error {
    Error::embedded_or_format(e, "not a valid image archive (truncated or corrupt tar?)")
}

fn intake<'s, R: Read + Send>(store: &'s Store, input: R) -> Result<Intake<'s>> {
    let br = BufReader::with_capacity(1 << 20, input);
    let (_, rd) = decompress(br).map_err(stream_err)?;
    let rd = LimitedReader::new(rd, MAX_ARCHIVE_BYTES, "uncompressed archive");
    let mut a = tar::Archive::new(rd);
    let mut it = Intake {
        files: HashMap::new(),
        aliases: HashMap::new(),
    };
    let mut json_total = 0u64;
    for e in a.entries().map_err(stream_err)? {
        let e = e.map_err(stream_err)?;
        let name = clean_name(&e.path_bytes())?;
        let kind = e.header().entry_type();
        let dir = name.rsplit_once('/').map_or("", |(d, _)| d).to_string();
        match kind {
            tar::EntryType::Directory => continue,
            tar::EntryType::Symlink => {
                let t = e.link_name_bytes().unwrap_or_default();
                let t = String::from_utf8_lossy(&t).into_owned();
                it.aliases.insert(name, join_rel(&dir, &t)?);
                continue;
            }
            tar::EntryType::Link => {
                let t = e.link_name_bytes().unwrap_or_default();
                it.aliases.insert(name, clean_name(&t)?);
                continue;
            }
            k if k.is_file() => {}
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            other => {
                return Err(Error::BadEntry {
                    entry: name,
                    reason: format!("unexpected entry type {other:?} in an image archive"),
                })
            }
        }
        let size = e.header().entry_size().unwrap_or(0);
        let mut br = BufReader::with_capacity(256 * 1024, e);
        let head = br.fill_buf().map_err(stream_err)?;
        if route(&name, head, size) == Route::Memory {
            let v = read_json_entry(&mut br, &name)?;
            if v.len() as u64 != size {
                return Err(Error::Format(format!(
                    "archive is truncated: {name} has {} of {size} bytes",
                    v.len()
                )));
            }
            json_total += v.len() as u64;
            if json_total > 16 * MAX_JSON_BYTES {
                return Err(Error::TooLarge {
                    what: "JSON documents in the archive".into(),
                    limit: 16 * MAX_JSON_BYTES,
                    setting: None,
                });
            }
            if let Some(d) = promised(&name) {
                let got = Digest::of(&v);
                if got != d {
                    return Err(Error::DigestMismatch {
                        what: format!("{name} in the archive"),
                        expected: d.to_string(),
                        actual: got.to_string(),
                    });
                }
            }
            it.files.insert(name, FileData::Json(v));
        } else {
            let staged = store.stage_layer(&mut br, &format!("archive entry {name}"))?;
            if staged.blob.size != size {
                return Err(Error::Format(format!(
                    "archive is truncated: {name} has {} of {size} bytes",
                    staged.blob.size
                )));
            }
            if let Some(d) = promised(&name) {
                if staged.blob.digest != d {
                    return Err(Error::DigestMismatch {
                        what: format!("{name} in the archive"),
                        expected: d.to_string(),
                        actual: staged.blob.digest.to_string(),
                    });
                }
            }
            it.files.insert(name, FileData::Layer(Box::new(staged)));
        }
    }
    Ok(it)
}

fn looks_like_tar(head: &[u8]) -> bool {
    head.len() >= 263 && &head[257..262] == b"ustar"
}

/// Where [`intake`] puts an archive entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Read into memory, capped at [`MAX_JSON_BYTES`] (a bigger one is refused as too large).
    Memory,
    /// Staged as a layer blob (validated while it is written).
    Layer,
}

/// Routes an entry by name first: the documents of the archive formats (`manifest.json`,
/// `index.json`, `oci-layout`, `repositories`, docker-archive configs `<hex>.json`, the legacy
/// `<id>/json` and `<id>/VERSION`) are JSON whatever their size, so an oversized one is refused
/// as too large rather than misread as a layer. A `blobs/sha256/<hex>` name does not say what
/// the blob is, and the index naming it may come later in the stream: tar or compression magic
/// makes it a layer, a JSON opening (`{`) a document (configs, manifests, nested indexes);
/// anything else small is kept in memory (tiny layers, e.g. an empty tar, have no magic) and
/// anything else big is a layer.
fn route(name: &str, head: &[u8], size: u64) -> Route {
    let base = name.rsplit('/').next().unwrap_or(name);
    let in_root = !name.contains('/');
    let top_dir_file = name.split('/').count() == 2;
    let named_json = matches!(
        name,
        "manifest.json" | "index.json" | "oci-layout" | "repositories"
    ) || (in_root && base.ends_with(".json"))
        || (top_dir_file && (base == "json" || base == "VERSION"));
    if named_json {
        return Route::Memory;
    }
    if Compression::detect(head) != Compression::None || looks_like_tar(head) {
        return Route::Layer;
    }
    let json_start = head
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if json_start || size <= MAX_JSON_BYTES {
        Route::Memory
    } else {
        Route::Layer
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(serde::Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(serde::Deserialize)]
struct IndexDoc {
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
}

#[derive(serde::Deserialize)]
struct ManifestDoc {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

struct Plan {
    config: Vec<u8>,
    layer_keys: Vec<String>,
    names: Vec<Reference>,
}

fn json_err(what: &str) -> impl Fn(serde_json::Error) -> Error + '_ {
    move |e| Error::Json {
        what: what.to_string(),
        source: e,
    }
}

fn check_layers(
    it: &Intake<'_>,
    config: &[u8],
    layer_names: &[String],
    what: &str,
) -> Result<Vec<String>> {
    let (_, diff_ids) = parse_config(config, what)?;
    if diff_ids.len() != layer_names.len() {
        return Err(Error::Format(format!(
            "{what} lists {} layers but the manifest has {}",
            diff_ids.len(),
            layer_names.len()
        )));
    }
    let mut keys = Vec::new();
    for (want, name) in diff_ids.iter().zip(layer_names) {
        let got = it.layer_diff_id(name)?;
        if got != *want {
            return Err(Error::DigestMismatch {
                what: format!("layer {name} (uncompressed) of {what}"),
                expected: want.to_string(),
                actual: got.to_string(),
            });
        }
        keys.push(it.layer_key(name)?);
    }
    Ok(keys)
}

fn docker_plans(it: &Intake<'_>, manifest: &[u8]) -> Result<Vec<Plan>> {
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(manifest).map_err(json_err("manifest.json"))?;
    let mut plans = Vec::new();
    for e in entries {
        let config = it.json(&e.config)?.to_vec();
        let base = e.config.rsplit('/').next().unwrap_or(&e.config);
        let hex = base.strip_suffix(".json").unwrap_or(base);
        if let Ok(want) = Digest::from_hex(hex) {
            let got = Digest::of(&config);
            if got != want {
                return Err(Error::DigestMismatch {
                    what: format!("image config {} in the archive", e.config),
                    expected: want.to_string(),
                    actual: got.to_string(),
                });
            }
        }
        let what = format!("image config {}", e.config);
        let layer_keys = check_layers(it, &config, &e.layers, &what)?;
        let names = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| Reference::parse(t))
            .collect::<Result<Vec<_>>>()?;
        plans.push(Plan {
            config,
            layer_keys,
            names,
        });
    }
    Ok(plans)
}

fn blob_name(d: &str) -> Result<String> {
    let d = Digest::parse(d)?;
    Ok(format!("blobs/sha256/{}", d.hex()))
}

fn oci_plans(it: &Intake<'_>, index: &[u8]) -> Result<Vec<Plan>> {
    let idx: IndexDoc = serde_json::from_slice(index).map_err(json_err("index.json"))?;
    if idx
        .media_type
        .as_deref()
        .is_some_and(|m| m != media::OCI_INDEX)
    {
        return Err(Error::Format(
            "index.json has an unexpected mediaType".into(),
        ));
    }
    let mut plans = Vec::new();
    for desc in &idx.manifests {
        let mut names = Vec::new();
        if let Some(n) = desc.annotations.get("io.containerd.image.name") {
            names.push(Reference::parse(n)?);
        } else if let Some(n) = desc.annotations.get("org.opencontainers.image.ref.name") {
            // A full reference names the image; a bare tag (no repository) cannot.
            if n.contains('/') || n.contains(':') || n.contains('@') {
                if let Ok(r) = Reference::parse(n) {
                    names.push(r);
                }
            }
        }
        let mut cur_media = desc.media_type.clone();
        let mut nested = false;
        let mut bytes = it.json(&blob_name(&desc.digest)?)?;
        // Follow a nested index to the manifest for this platform.
        for _ in 0..4 {
            let is_index = cur_media == media::OCI_INDEX
                || cur_media == media::DOCKER_LIST
                || serde_json::from_slice::<ManifestDoc>(bytes).is_err();
            if !is_index {
                break;
            }
            let sub: IndexDoc = serde_json::from_slice(bytes).map_err(json_err("nested index"))?;
            let arch = host_arch();
            let pick = sub
                .manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == arch)
                })
                .or_else(|| {
                    if sub.manifests.len() == 1 {
                        sub.manifests.first()
                    } else {
                        None
                    }
                })
                .ok_or_else(|| {
                    Error::NotFound(format!("the archive has no image for linux/{arch}"))
                })?;
            cur_media = pick.media_type.clone();
            nested = true;
            bytes = it.json(&blob_name(&pick.digest)?)?;
        }
        let m: ManifestDoc = serde_json::from_slice(bytes).map_err(json_err("image manifest"))?;
        if let Some(mt) = &m.media_type {
            if mt != media::OCI_MANIFEST && mt != media::DOCKER_MANIFEST {
                return Err(Error::Format(format!(
                    "unsupported manifest mediaType {mt}"
                )));
            }
        }
        if let Some(sz) = desc.size.filter(|_| !nested) {
            if sz != bytes.len() as u64 {
                return Err(Error::SizeMismatch {
                    what: format!("manifest {}", desc.digest),
                    expected: sz,
                    actual: bytes.len() as u64,
                });
            }
        }
        let config = it.json(&blob_name(&m.config.digest)?)?.to_vec();
        let layer_names = m
            .layers
            .iter()
            .map(|l| blob_name(&l.digest))
            .collect::<Result<Vec<_>>>()?;
        let layer_keys = check_layers(
            it,
            &config,
            &layer_names,
            &format!("image config {}", m.config.digest),
        )?;
        plans.push(Plan {
            config,
            layer_keys,
            names,
        });
    }
    if plans.is_empty() {
        return Err(Error::Format("index.json lists no image".into()));
    }
    Ok(plans)
}

/// The GOARCH-style name of this machine's architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Loads an image archive (see the module docs). Returns the images added, in archive order.
pub fn load<R: Read + Send>(store: &Store, input: R) -> Result<Vec<LoadedImage>> {
    let mut it = intake(store, input)?;
    if it.files.is_empty() && it.aliases.is_empty() {
        return Err(Error::Format(
            "the archive is empty: expected the output of `docker save`, `lade save` or an OCI \
             image layout archive"
                .into(),
        ));
    }
    let plans = if it.files.contains_key("manifest.json") {
        docker_plans(&it, it.json("manifest.json")?)?
    } else if it.files.contains_key("index.json") {
        oci_plans(&it, it.json("index.json")?)?
    } else if it.files.contains_key("repositories") {
        return Err(Error::Format(
            "this is a legacy (pre-1.10) docker archive without manifest.json; re-save it with a newer docker".into(),
        ));
    } else {
        return Err(Error::Format(
            "not an image archive: it has neither manifest.json (docker save) nor index.json (OCI layout)".into(),
        ));
    };
    // Everything verified: publish layers, then configs, then names.
    let mut used: Vec<String> = plans
        .iter()
        .flat_map(|p| p.layer_keys.iter().cloned())
        .collect();
    used.sort();
    used.dedup();
    // Small layers were kept in memory: stage (and so validate) them before publishing anything.
    for key in &used {
        if let Some(FileData::Json(b)) = it.files.get(key) {
            let staged = store.stage_layer(&b[..], &format!("archive entry {key}"))?;
            it.files
                .insert(key.clone(), FileData::Layer(Box::new(staged)));
        }
    }
    for key in used {
        if let Some(FileData::Layer(l)) = it.files.remove(&key) {
            let known = store.layer(&l.diff_id)?.is_some_and(|r| {
                r.blobs.iter().any(|b| b.digest == l.blob.digest) && store.has_blob(&l.blob.digest)
            });
            if !known {
                l.commit()?;
            }
        }
    }
    let mut out = Vec::new();
    for p in plans {
        let img = store.put_config(&p.config)?;
        if p.names.is_empty() {
            store.keep_unnamed(&img.id)?;
        }
        for n in &p.names {
            store.tag(n, &img.id)?;
        }
        out.push(LoadedImage {
            id: img.id,
            names: p.names,
        });
    }
    Ok(out)
}

/// An image to write with [`save`] and the names to give it.
#[derive(Debug, Clone)]
pub struct SaveImage {
    pub image: Image,
    pub names: Vec<Reference>,
}

struct Out<'w, W: Write> {
    w: &'w mut W,
}

impl<W: Write> Out<'_, W> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.w.write_all(b).ctx("write archive", "output")
    }
    fn file(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.put(&file_header(name, data.len() as u64, 0))?;
        self.put(data)?;
        self.put(tar_padding(data.len() as u64))
    }
}

fn to_json<T: serde::Serialize>(v: &T, what: &str) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Json {
        what: what.to_string(),
        source: e,
    })
}

/// Writes `images` as one archive (see the module docs) to `out`. Pass a `File` (or stdout) as
/// `W` so layer blobs are copied by the kernel.
pub fn save<W: Write>(store: &Store, images: &[SaveImage], out: &mut W) -> Result<()> {
    let mut o = Out { w: out };
    o.put(&dir_header("blobs", 0))?;
    o.put(&dir_header("blobs/sha256", 0))?;
    let mut written: std::collections::HashSet<Digest> = std::collections::HashSet::new();
    let mut index = Vec::new();
    let mut docker = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for si in images {
        let img = &si.image;
        for d in &img.layers {
            if !written.insert(d.clone()) {
                continue;
            }
            let rec = store.require_layer(d)?;
            let name = format!("blobs/sha256/{}", d.hex());
            o.put(&file_header(&name, rec.size, 0))?;
            let copied = match rec
                .blob(Compression::None)
                .filter(|b| store.has_blob(&b.digest))
            {
                Some(b) => {
                    let mut f = store.open_blob(&b.digest)?;
                    io::copy(&mut f, o.w)
                        .ctx("copy layer blob into archive", store.blob_path(&b.digest))?
                }
                None => {
                    let mut r = store.open_layer(d)?.take(rec.size);
                    io::copy(&mut r, o.w).ctx("decompress layer into archive", d.to_string())?
                }
            };
            if copied != rec.size {
                return Err(Error::SizeMismatch {
                    what: format!("stored layer {d} (run `lade system check`)"),
                    expected: rec.size,
                    actual: copied,
                });
            }
            o.put(tar_padding(rec.size))?;
        }
        let (manifest, mdigest) = img.manifest(store)?;
        for (d, bytes) in [(&img.id, &img.config_bytes), (&mdigest, &manifest)] {
            if written.insert(d.clone()) {
                o.file(&format!("blobs/sha256/{}", d.hex()), bytes)?;
            }
        }
        let desc = |ann: Option<&Reference>| {
            let mut v = serde_json::json!({
                "mediaType": media::OCI_MANIFEST,
                "digest": mdigest,
                "size": manifest.len(),
            });
            if let Some(r) = ann {
                v["annotations"] = serde_json::json!({
                    "io.containerd.image.name": r.to_string(),
                    "org.opencontainers.image.ref.name": r.tag().unwrap_or("latest"),
                });
            }
            v
        };
        let tags: Vec<&Reference> = si
            .names
            .iter()
            .filter(|r| r.tag().is_some() && r.digest().is_none())
            .collect();
        if tags.is_empty() {
            index.push(desc(None));
        }
        for t in &tags {
            index.push(desc(Some(t)));
            if let (Some(tag), Some(top)) = (t.tag(), img.layers.last()) {
                repositories
                    .entry(t.familiar_name())
                    .or_default()
                    .insert(tag.to_string(), top.hex().to_string());
            }
        }
        docker.push(serde_json::json!({
            "Config": format!("blobs/sha256/{}", img.id.hex()),
            "RepoTags": if tags.is_empty() { serde_json::Value::Null } else {
                serde_json::json!(tags.iter().map(|t| t.familiar()).collect::<Vec<_>>())
            },
            "Layers": img.layers.iter().map(|d| format!("blobs/sha256/{}", d.hex())).collect::<Vec<_>>(),
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": index,
    });
    o.file("index.json", &to_json(&index, "index.json")?)?;
    o.file("manifest.json", &to_json(&docker, "manifest.json")?)?;
    o.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    if !repositories.is_empty() {
        o.file("repositories", &to_json(&repositories, "repositories")?)?;
    }
    o.put(&[0u8; 1024])?;
    o.w.flush().ctx("flush archive", "output")?;
    Ok(())
}

/// Opens `path` for [`load`] (convenience for callers that have a file).
pub fn open_archive(path: &std::path::Path) -> Result<File> {
    File::open(path).ctx("open archive", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// A JSON document just over the cap.
    fn big_json() -> Vec<u8> {
        let mut v = b"{\"pad\":\"".to_vec();
        v.resize(MAX_JSON_BYTES as usize + 10, b'x');
        v.extend_from_slice(b"\"}");
        v
    }

    #[test]
    fn entries_are_routed_by_name_then_content() {
        let big = MAX_JSON_BYTES + 1;
        let tar = tar_of(&[("f", b"x")]);
        let gz = [0x1f, 0x8b, 8, 0];
        for name in [
            "manifest.json",
            "index.json",
            "oci-layout",
            "repositories",
            "0123abcd.json",
            "0123abcd/json",
            "0123abcd/VERSION",
        ] {
            // Even with a layer's magic: the name says what it is.
            assert_eq!(route(name, &tar, big), Route::Memory, "{name}");
            assert_eq!(route(name, b"{}", 2), Route::Memory, "{name}");
        }
        let blob = "blobs/sha256/00";
        assert_eq!(route(blob, &tar, 10), Route::Layer);
        assert_eq!(route(blob, &gz, big), Route::Layer);
        assert_eq!(route(blob, b" \n{\"a\":1}", big), Route::Memory);
        assert_eq!(route(blob, &[0u8; 1024], 1024), Route::Memory);
        assert_eq!(route(blob, b"\x00garbage", big), Route::Layer);
        assert_eq!(route("0123abcd/layer.tar", &tar, big), Route::Layer);
        assert_eq!(route("dir/x.json", &tar, big), Route::Layer);
    }

    #[test]
    fn an_oversized_json_document_is_refused_as_too_large() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path().join("root")).unwrap();
        let big = big_json();
        let hex = "a".repeat(64);
        let blob = format!("blobs/sha256/{hex}");
        for (name, want) in [
            ("manifest.json", "manifest.json"),
            ("index.json", "index.json"),
            ("0123abcd.json", "0123abcd.json"),
            (blob.as_str(), blob.as_str()),
        ] {
            let archive = tar_of(&[("oci-layout", b"{}"), (name, &big)]);
            match load(&s, &archive[..]) {
                Err(Error::TooLarge { what, limit, .. }) => {
                    assert!(what.contains(want), "{name}: {what}");
                    assert_eq!(limit, MAX_JSON_BYTES);
                }
                other => panic!("{name}: expected TooLarge, got {other:?}"),
            }
        }
        assert!(s.images().unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(s.root().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
    }
}
