//! Image references (`name[:tag][@digest]`), parsed and normalised the way docker does
//! (distribution/reference `ParseNormalizedNamed` + `TagNameOnly`): `busybox` is
//! `docker.io/library/busybox:latest`, `localhost:5000/x` keeps its registry, upper-case
//! repository names and 64-hex "names" are rejected.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// The registry used when a reference names none.
pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DOMAIN: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A normalised image reference.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

fn err(input: &str, reason: impl Into<String>) -> Error {
    Error::InvalidReference {
        input: input.to_string(),
        reason: reason.into(),
    }
}

impl Reference {
    /// Parses and normalises like `docker pull NAME`: adds `docker.io`, `library/` and `:latest`
    /// (the tag only when no digest is given).
    pub fn parse(input: &str) -> Result<Self> {
        let mut r = Self::parse_named(input)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some("latest".to_string());
        }
        Ok(r)
    }

    /// Parses and normalises without adding a default tag.
    pub fn parse_named(input: &str) -> Result<Self> {
        if input.is_empty() {
            return Err(err(input, "empty reference"));
        }
        if input.len() == 64 && input.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err(
                input,
                "cannot specify 64-byte hexadecimal strings as a repository name",
            ));
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => {
                let digest = Digest::parse(d).map_err(|_| {
                    err(
                        input,
                        format!("invalid digest {d:?} (only sha256:<64 hex> is supported)"),
                    )
                })?;
                (n, Some(digest))
            }
            None => (input, None),
        };
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].find(':') {
            Some(i) => {
                let at = last_slash + i;
                (&name_tag[..at], Some(name_tag[at + 1..].to_string()))
            }
            None => (name_tag, None),
        };
        if let Some(t) = &tag {
            if !valid_tag(t) {
                return Err(err(
                    input,
                    format!("invalid tag {t:?}: use up to 128 of [A-Za-z0-9_.-], not starting with . or -"),
                ));
            }
        }
        let (mut domain, mut path) = match name.find('/') {
            Some(i)
                if name[..i].contains(['.', ':'])
                    || &name[..i] == "localhost"
                    || name[..i].to_lowercase() != name[..i] =>
            {
                (name[..i].to_string(), name[i + 1..].to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        if domain == LEGACY_DOMAIN {
            domain = DEFAULT_DOMAIN.to_string();
        }
        if domain == DEFAULT_DOMAIN && !path.contains('/') {
            path = format!("{OFFICIAL_PREFIX}{path}");
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err(input, "repository name must be lowercase"));
        }
        if !valid_domain(&domain) {
            return Err(err(input, format!("invalid registry host {domain:?}")));
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(err(
                input,
                "invalid repository name: use lowercase letters, digits and separators (. _ __ -) between them",
            ));
        }
        if domain.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(err(
                input,
                format!("repository name longer than {MAX_NAME_LEN} characters"),
            ));
        }
        Ok(Self {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The registry as users write it and credentials are keyed: `docker.io`,
    /// `localhost:5000` (Docker Hub's API host is the registry crate's business).
    pub fn registry(&self) -> &str {
        &self.domain
    }
    /// Repository path inside the registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.path
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }
    /// `domain/path`, e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
    /// The short name docker prints: `busybox`, `me/app`, `localhost:5000/x`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_PREFIX) {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.path.clone(),
            }
        } else {
            self.name()
        }
    }
    /// The familiar form with tag/digest, e.g. `busybox:latest`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        self.suffix(&mut s);
        s
    }
    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Self> {
        if !valid_tag(tag) {
            return Err(err(tag, "invalid tag"));
        }
        Ok(Self {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }
    /// What goes after `/manifests/` in the registry API: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.as_str(),
            (None, Some(t)) => t,
            (None, None) => "latest",
        }
    }
    /// Another repository on the same registry, with the same tag/digest.
    pub fn with_repository(&self, repository: &str) -> Result<Self> {
        let full = format!("{}/{repository}", self.domain);
        if repository.is_empty()
            || !repository.split('/').all(valid_path_component)
            || full.len() > MAX_NAME_LEN
        {
            return Err(err(
                &full,
                "invalid repository name: use lowercase letters, digits and separators (. _ __ -) between them",
            ));
        }
        Ok(Self {
            path: repository.to_string(),
            ..self.clone()
        })
    }
    /// The same repository pinned to a digest, no tag.
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }
    fn suffix(&self, s: &mut String) {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_str());
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        self.suffix(&mut s);
        f.write_str(&s)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Normalises what a user passes to `lade login`/`logout` or `--insecure-registry`: strips
/// `https://`/`http://` and any path, maps Docker Hub's aliases (`index.docker.io`,
/// `registry-1.docker.io`, `registry.hub.docker.com`, `https://index.docker.io/v1/`) to
/// `docker.io`, and validates the host.
pub fn normalize_registry(input: &str) -> Result<String> {
    let trimmed = input.trim();
    let without_scheme = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .unwrap_or(trimmed);
    let host = without_scheme.split('/').next().unwrap_or_default();
    let host = match host {
        LEGACY_DOMAIN | "registry-1.docker.io" | "registry.hub.docker.com" => DEFAULT_DOMAIN,
        h => h,
    };
    if !valid_domain(host) {
        return Err(err(input, format!("invalid registry host {host:?}")));
    }
    Ok(host.to_string())
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        // [ipv6]:port
        match rest.split_once(']') {
            Some((ip, after)) => {
                if ip.is_empty()
                    || !ip
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
                {
                    return false;
                }
                match after {
                    "" => return true,
                    p => match p.strip_prefix(':') {
                        Some(port) => {
                            return !port.is_empty()
                                && port.len() <= 5
                                && port.bytes().all(|b| b.is_ascii_digit())
                        }
                        None => return false,
                    },
                }
            }
            None => return false,
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_normalisation() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(norm("me/app"), "docker.io/me/app:latest");
        assert_eq!(norm("me/app/sub:v1"), "docker.io/me/app/sub:v1");
        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        assert_eq!(norm("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(norm("localhost:5000/x:tag"), "localhost:5000/x:tag");
        assert_eq!(norm("example.com/a/b"), "example.com/a/b:latest");
        assert_eq!(norm("127.0.0.1:5000/a"), "127.0.0.1:5000/a:latest");
        assert_eq!(norm("[::1]:5000/a"), "[::1]:5000/a:latest");
        // An upper-case first component is a registry host (docker's rule).
        assert_eq!(norm("Registry/app"), "Registry/app:latest");
        assert_eq!(
            norm("a__b-c---e/f.g_h"),
            "docker.io/a__b-c---e/f.g_h:latest"
        );
        assert!(
            Reference::parse("a__b.c/x").is_err(),
            "a dotted first component is a host"
        );
    }

    #[test]
    fn digests() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            norm(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            norm(&format!("busybox:1@{d}")),
            format!("docker.io/library/busybox:1@{d}")
        );
        assert!(Reference::parse("busybox@sha256:abc").is_err());
        let r = Reference::parse(&format!("localhost:5000/x@{d}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().as_str(), d);
    }

    #[test]
    fn familiar() {
        let f = |s: &str| Reference::parse(s).unwrap().familiar();
        assert_eq!(f("busybox"), "busybox:latest");
        assert_eq!(f("docker.io/library/busybox:1"), "busybox:1");
        assert_eq!(f("docker.io/me/app"), "me/app:latest");
        assert_eq!(f("docker.io/library/a/b"), "library/a/b:latest");
        assert_eq!(f("localhost:5000/x:y"), "localhost:5000/x:y");
    }

    #[test]
    fn rejects_like_docker() {
        for bad in [
            "",
            "Busybox",
            "me/App",
            "busybox:",
            "busybox:-x",
            "busybox:.x",
            ":tag",
            "a//b",
            "/a",
            "a/",
            "a..b",
            "a-",
            "-a",
            "a b",
            "localhost:port/x",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            &format!("busybox:{}", "a".repeat(129)),
            &format!("x/{}", "a".repeat(260)),
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let e = Reference::parse("Me/App").unwrap_err().to_string();
        assert!(e.contains("invalid"), "{e}");
        let e = Reference::parse("me/App").unwrap_err().to_string();
        assert!(e.contains("must be lowercase"), "{e}");
    }

    #[test]
    fn with_tag_and_digest() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(
            r.with_tag("v2").unwrap().to_string(),
            "docker.io/library/busybox:v2"
        );
        assert!(r.with_tag("bad tag").is_err());
        let d = Digest::of(b"x");
        assert_eq!(
            r.with_digest(d.clone()).to_string(),
            format!("docker.io/library/busybox@{d}")
        );
    }
    // Cases ported from the registry crate's parser when the two were merged.

    #[test]
    fn normalises_like_docker_more() {
        for (input, want) in [
            ("docker.io/user/app:v1", "docker.io/user/app:v1"),
            ("localhost:5000/a/b:t", "localhost:5000/a/b:t"),
            ("[::1]:5000/a:t", "[::1]:5000/a:t"),
            (
                "ghcr.io/o/r/deep/path:1.0-rc_1",
                "ghcr.io/o/r/deep/path:1.0-rc_1",
            ),
            // a single component with a port-like suffix is a Hub repository with a tag
            ("foo:5000", "docker.io/library/foo:5000"),
            ("a.b-c/d__e.f", "a.b-c/d__e.f:latest"),
        ] {
            assert_eq!(norm(input), want, "{input}");
        }
    }

    #[test]
    fn registry_api_parts() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = Reference::parse(&format!("localhost:5000/x:t@{d}")).unwrap();
        assert_eq!(r.tag(), Some("t"));
        assert_eq!(r.manifest_reference(), d, "the digest wins over the tag");
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "x");
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.manifest_reference(), "latest");
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "library/busybox");
        let pinned = r.with_digest(Digest::parse(d).unwrap());
        assert_eq!(pinned.tag(), None);
        assert_eq!(pinned.manifest_reference(), d);
        assert_eq!(
            r.with_repository("other/repo").unwrap().to_string(),
            "docker.io/other/repo:latest"
        );
        assert!(r.with_repository("Bad").is_err());
        assert!(r.with_repository("").is_err());
        assert!(r.with_tag("-bad").is_err());
    }

    #[test]
    fn rejects_invalid_more() {
        let long_name = format!("localhost/{}", "a".repeat(250));
        for bad in [
            "docker.io/Busybox",
            "busybox:ta/g",
            "busybox@",
            "a/-b",
            "a/b-",
            "a___b",
            "local host/a",
            "host:port/a",
            "host:123456/a",
            "[zz]/a",
            "-bad.io/a",
            long_name.as_str(),
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn registry_arguments() {
        for (input, want) in [
            ("docker.io", "docker.io"),
            ("index.docker.io", "docker.io"),
            ("https://index.docker.io/v1/", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("localhost:5000", "localhost:5000"),
            ("https://myreg.example:8443/", "myreg.example:8443"),
            ("http://127.0.0.1:5000", "127.0.0.1:5000"),
            ("[::1]:5000", "[::1]:5000"),
        ] {
            assert_eq!(normalize_registry(input).unwrap(), want, "{input}");
        }
        for bad in ["", "https://", "a b", "host:x"] {
            assert!(normalize_registry(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parse_never_panics_on_odd_input() {
        for s in [
            "@", ":", "/", ":@", "a:@", "@@", "[", "[]", "[:", "a/b:c:d", "é/ü", "a@b@c",
        ] {
            let _ = Reference::parse(s);
        }
    }
}
