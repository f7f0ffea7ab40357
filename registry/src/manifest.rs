//! Manifest media types, parsing with hardening, and platform selection.
//!
//! A manifest is accepted only when its declared media types (the body's `mediaType` and the
//! response's `Content-Type`) agree with what the JSON is: an index has `manifests`, an image
//! manifest has `config`/`layers`, and a document with both is rejected (GUIDE §4 item 18).
//! Documents are size-limited before parsing ([`MAX_MANIFEST_SIZE`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use lade_cache::Digest;

pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// The `Accept` header sent when fetching a manifest: every kind Lade understands.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest accepted (containerd uses the same bound).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Largest image config accepted by [`crate::Client::fetch_blob_bytes`] callers by default.
pub const MAX_CONFIG_SIZE: u64 = 8 << 20;

/// What a document is, independent of docker/OCI flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image manifest: config + layers.
    Image,
    /// A manifest list / image index: per-platform manifests.
    Index,
}

impl ManifestKind {
    /// The kind a manifest media type names, `None` for anything else.
    pub fn of_media_type(media_type: &str) -> Option<ManifestKind> {
        match media_type {
            DOCKER_MANIFEST_V2 | OCI_MANIFEST => Some(ManifestKind::Image),
            DOCKER_MANIFEST_LIST | OCI_INDEX => Some(ManifestKind::Index),
            _ => None,
        }
    }
}

impl fmt::Display for ManifestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ManifestKind::Image => "image manifest",
            ManifestKind::Index => "image index",
        })
    }
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            platform: None,
            urls: None,
            annotations: None,
        }
    }
}

/// A platform (`linux/amd64`, `linux/arm64/v8`), as in an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

impl Default for Platform {
    /// `linux/amd64`, what Lade builds and runs.
    fn default() -> Platform {
        Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
            os_version: None,
        }
    }
}

impl Platform {
    /// Parses `os/arch[/variant]` as given to `--platform`.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = (2..=3).contains(&parts.len())
            && parts.iter().all(|p| {
                !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
        if !ok {
            return Err(Error::InvalidPlatform {
                platform: s.chars().take(100).collect(),
            });
        }
        Ok(Platform {
            os: parts[0].to_ascii_lowercase(),
            architecture: parts[1].to_ascii_lowercase(),
            variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
            os_version: None,
        })
    }

    /// containerd's normalisation: `aarch64` is `arm64` (variant `v8` by default), `x86_64` is
    /// `amd64` (no variant), `arm` defaults to `v7`.
    fn normalized(&self) -> (String, String, String) {
        let os = self.os.to_ascii_lowercase();
        let variant = self
            .variant
            .clone()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let (arch, variant) = match self.architecture.to_ascii_lowercase().as_str() {
            "x86_64" | "x86-64" | "amd64" => (
                "amd64".to_string(),
                if variant == "v1" {
                    String::new()
                } else {
                    variant
                },
            ),
            "aarch64" | "arm64" => (
                "arm64".to_string(),
                if variant.is_empty() || variant == "8" {
                    "v8".to_string()
                } else {
                    variant
                },
            ),
            "armhf" => ("arm".to_string(), "v7".to_string()),
            "armel" => ("arm".to_string(), "v6".to_string()),
            "arm" => (
                "arm".to_string(),
                match variant.as_str() {
                    "" | "7" => "v7".to_string(),
                    "5" | "6" | "8" => format!("v{variant}"),
                    _ => variant,
                },
            ),
            "i386" | "386" => ("386".to_string(), variant),
            other => (other.to_string(), variant),
        };
        (os, arch, variant)
    }

    /// Whether an index entry for `other` runs on this platform (exact after normalisation).
    pub fn matches(&self, other: &Platform) -> bool {
        self.normalized() == other.normalized()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image manifest (docker v2 schema 2 or OCI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageManifest {
    /// The effective media type (body `mediaType`, else `Content-Type`, else OCI).
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// A manifest list (docker) or image index (OCI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageIndex {
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

impl ImageIndex {
    /// The first entry for `platform` (index order, as docker and containerd pick).
    pub fn select(&self, platform: &Platform) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| {
            ManifestKind::of_media_type(&d.media_type) != Some(ManifestKind::Index)
                && d.platform.as_ref().is_some_and(|p| platform.matches(p))
        })
    }

    /// The platforms this index offers, for error messages (attestation entries skipped).
    pub fn platforms(&self) -> Vec<String> {
        self.manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .filter(|p| p.os != "unknown")
            .map(|p| p.to_string())
            .collect()
    }
}

/// A parsed manifest document.
#[allow(clippy::large_enum_variant)] // a handful per pull; boxing buys nothing
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

impl Manifest {
    pub fn kind(&self) -> ManifestKind {
        match self {
            Manifest::Image(_) => ManifestKind::Image,
            Manifest::Index(_) => ManifestKind::Index,
        }
    }

    pub fn media_type(&self) -> &str {
        match self {
            Manifest::Image(m) => &m.media_type,
            Manifest::Index(i) => &i.media_type,
        }
    }

    /// Parses and validates a manifest. `content_type` is the response's `Content-Type` (or the
    /// type a caller is about to push), used when the body declares none and checked against
    /// the body otherwise. `what` names the document in errors (a reference or digest).
    pub fn parse(bytes: &[u8], content_type: Option<&str>, what: &str) -> Result<Manifest> {
        let invalid = |reason: String| Error::InvalidManifest {
            what: what.to_string(),
            reason,
        };
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(Error::TooLarge {
                what: format!("manifest {what}"),
                limit: MAX_MANIFEST_SIZE,
            });
        }
        #[derive(Deserialize)]
        struct Probe {
            #[serde(rename = "schemaVersion")]
            schema_version: Option<i64>,
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
            config: Option<serde_json::Value>,
            layers: Option<serde_json::Value>,
            manifests: Option<serde_json::Value>,
            #[serde(rename = "fsLayers")]
            fs_layers: Option<serde_json::Value>,
        }
        let probe: Probe = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("not a JSON object: {e}")))?;
        let header = content_type
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|c| !c.is_empty());
        let schema1 =
            |t: &Option<String>| t.as_deref().is_some_and(|t| DOCKER_SCHEMA1.contains(&t));
        if probe.schema_version == Some(1)
            || probe.fs_layers.is_some()
            || schema1(&probe.media_type)
            || schema1(&header)
        {
            return Err(invalid(
                "docker schema 1 manifests are not supported; push the image again with a current docker or lade".into(),
            ));
        }
        if probe.schema_version != Some(2) {
            return Err(invalid(format!(
                "schemaVersion must be 2, found {:?}",
                probe.schema_version
            )));
        }
        let is_index = probe.manifests.is_some();
        let is_image = probe.config.is_some() || probe.layers.is_some();
        let kind = match (is_index, is_image) {
            (true, true) => {
                return Err(invalid(
                    "document has both `manifests` and `config`/`layers`: it is neither a valid index nor a valid image manifest".into(),
                ))
            }
            (true, false) => ManifestKind::Index,
            (false, true) => ManifestKind::Image,
            (false, false) => {
                return Err(invalid(
                    "document has neither `manifests` nor `config`/`layers`".into(),
                ))
            }
        };
        if let Some(declared) = &probe.media_type {
            match ManifestKind::of_media_type(declared) {
                Some(k) if k == kind => {}
                Some(k) => {
                    return Err(invalid(format!(
                        "mediaType {declared} says {k} but the content is an {kind}"
                    )))
                }
                None => return Err(invalid(format!("unsupported mediaType {declared}"))),
            }
        }
        if let Some(h) = &header {
            if let Some(k) = ManifestKind::of_media_type(h) {
                if k != kind {
                    return Err(invalid(format!(
                        "Content-Type {h} says {k} but the content is an {kind}"
                    )));
                }
            }
        }
        let media_type = probe
            .media_type
            .clone()
            .or_else(|| header.filter(|h| ManifestKind::of_media_type(h).is_some()))
            .unwrap_or_else(|| {
                match kind {
                    ManifestKind::Image => OCI_MANIFEST,
                    ManifestKind::Index => OCI_INDEX,
                }
                .to_string()
            });
        match kind {
            ManifestKind::Image => {
                #[derive(Deserialize)]
                struct Raw {
                    config: Descriptor,
                    #[serde(default)]
                    layers: Vec<Descriptor>,
                }
                let raw: Raw = serde_json::from_slice(bytes)
                    .map_err(|e| invalid(format!("bad image manifest: {e}")))?;
                Ok(Manifest::Image(ImageManifest {
                    media_type,
                    config: raw.config,
                    layers: raw.layers,
                }))
            }
            ManifestKind::Index => {
                #[derive(Deserialize)]
                struct Raw {
                    manifests: Vec<Descriptor>,
                }
                let raw: Raw = serde_json::from_slice(bytes)
                    .map_err(|e| invalid(format!("bad image index: {e}")))?;
                Ok(Manifest::Index(ImageIndex {
                    media_type,
                    manifests: raw.manifests,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn image(media_type: Option<&str>) -> serde_json::Value {
        let mut v = json!({
            "schemaVersion": 2,
            "config": {"mediaType": DOCKER_CONFIG, "digest": d(1), "size": 10},
            "layers": [{"mediaType": DOCKER_LAYER_GZIP, "digest": d(2), "size": 20}],
        });
        if let Some(m) = media_type {
            v["mediaType"] = json!(m);
        }
        v
    }

    fn index(media_type: Option<&str>) -> serde_json::Value {
        let mut v = json!({
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": d(3), "size": 30,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": OCI_MANIFEST, "digest": d(4), "size": 40,
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": OCI_MANIFEST, "digest": d(5), "size": 50,
                 "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
                {"mediaType": OCI_MANIFEST, "digest": d(6), "size": 60,
                 "platform": {"os": "unknown", "architecture": "unknown"}},
            ],
        });
        if let Some(m) = media_type {
            v["mediaType"] = json!(m);
        }
        v
    }

    fn parse(v: &serde_json::Value, ct: Option<&str>) -> Result<Manifest> {
        Manifest::parse(&serde_json::to_vec(v).unwrap(), ct, "test")
    }

    #[test]
    fn parses_docker_and_oci_kinds() {
        let m = parse(&image(Some(DOCKER_MANIFEST_V2)), Some(DOCKER_MANIFEST_V2)).unwrap();
        let Manifest::Image(m) = m else { panic!() };
        assert_eq!(m.media_type, DOCKER_MANIFEST_V2);
        assert_eq!(m.layers[0].size, 20);
        assert_eq!(m.config.digest.as_str(), d(1));

        let m = parse(
            &image(None),
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
        )
        .unwrap();
        assert_eq!(m.media_type(), OCI_MANIFEST);
        let m = parse(&image(None), Some("application/json")).unwrap();
        assert_eq!(
            m.media_type(),
            OCI_MANIFEST,
            "OCI is the default when nothing is declared"
        );

        let m = parse(&index(Some(DOCKER_MANIFEST_LIST)), None).unwrap();
        assert_eq!(m.kind(), ManifestKind::Index);
        let m = parse(&index(None), Some(OCI_INDEX)).unwrap();
        assert_eq!(m.media_type(), OCI_INDEX);
    }

    #[test]
    fn rejects_media_type_disagreeing_with_content() {
        for (v, ct) in [
            (image(Some(OCI_INDEX)), None),
            (image(Some(DOCKER_MANIFEST_LIST)), None),
            (image(None), Some(OCI_INDEX)),
            (image(Some(OCI_MANIFEST)), Some(DOCKER_MANIFEST_LIST)),
            (index(Some(OCI_MANIFEST)), None),
            (index(None), Some(DOCKER_MANIFEST_V2)),
            (image(Some("application/vnd.example+json")), None),
        ] {
            let err = parse(&v, ct).unwrap_err();
            assert!(matches!(err, Error::InvalidManifest { .. }), "{err}");
        }
    }

    #[test]
    fn rejects_ambiguous_and_legacy_documents() {
        let mut both = image(Some(OCI_MANIFEST));
        both["manifests"] = index(None)["manifests"].clone();
        let err = parse(&both, None).unwrap_err().to_string();
        assert!(err.contains("both"), "{err}");
        let mut both = index(Some(OCI_INDEX));
        both["layers"] = json!([]);
        assert!(parse(&both, None).is_err());

        assert!(parse(&json!({"schemaVersion": 2}), None).is_err());
        assert!(parse(&json!({"schemaVersion": 1, "fsLayers": []}), None)
            .unwrap_err()
            .to_string()
            .contains("schema 1"));
        let mut v3 = image(None);
        v3["schemaVersion"] = json!(3);
        assert!(parse(&v3, None).is_err());
        assert!(Manifest::parse(b"[1,2]", None, "x").is_err());
        assert!(Manifest::parse(b"not json", None, "x").is_err());
        let mut bad_digest = image(None);
        bad_digest["layers"][0]["digest"] = json!("sha256:zz");
        assert!(parse(&bad_digest, None).is_err());
        let mut neg = image(None);
        neg["layers"][0]["size"] = json!(-1);
        assert!(parse(&neg, None).is_err());
    }

    #[test]
    fn size_limit() {
        let mut big = image(None);
        big["annotations"] = json!({"pad": "x".repeat(MAX_MANIFEST_SIZE as usize)});
        assert!(matches!(parse(&big, None), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn platform_selection() {
        let Manifest::Index(i) = parse(&index(None), None).unwrap() else {
            panic!()
        };
        let pick = |p: &str| i.select(&Platform::parse(p).unwrap()).map(|d| d.size);
        assert_eq!(i.select(&Platform::default()).map(|d| d.size), Some(40));
        assert_eq!(pick("linux/amd64"), Some(40));
        assert_eq!(pick("linux/arm64"), Some(30), "arm64 means arm64/v8");
        assert_eq!(pick("linux/arm64/v8"), Some(30));
        assert_eq!(pick("linux/arm"), Some(50), "arm means arm/v7");
        assert_eq!(pick("linux/arm/v6"), None);
        assert_eq!(pick("windows/amd64"), None);
        assert_eq!(
            i.platforms(),
            ["linux/arm64/v8", "linux/amd64", "linux/arm/v7"]
        );
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux/amd64/v1/x").is_err());
        assert!(Platform::parse("linux//v7").is_err());
        assert_eq!(
            Platform::parse("linux/arm/v7").unwrap().to_string(),
            "linux/arm/v7"
        );
    }
}
