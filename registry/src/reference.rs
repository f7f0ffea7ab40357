//! Image references, parsed and normalised the way docker does.
//!
//! `busybox` is `docker.io/library/busybox:latest`, `localhost:5000/a/b:t` keeps its registry,
//! `x@sha256:...` pins a digest. The first path component is a registry when it contains a `.` or
//! a `:`, is `localhost`, or has upper-case letters (docker's rule); otherwise the reference is on
//! Docker Hub. `docker.io` is what users write and what credentials are stored under; the API
//! itself lives at `registry-1.docker.io` ([`Reference::api_host`]).
//!
//! (The store has a reference type of its own while both are written; one of them goes.)

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// The registry users write for Docker Hub.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API is served.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The key docker writes Hub credentials under in `config.json`.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A normalised image reference: registry, repository, and a tag and/or a digest.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises `input` like `docker pull` does. A reference with neither tag nor
    /// digest gets the tag `latest`.
    pub fn parse(input: &str) -> Result<Reference> {
        let invalid = |reason: String| Error::InvalidReference {
            reference: input.chars().take(300).collect(),
            reason,
        };
        if input.is_empty() {
            return Err(invalid("empty reference".into()));
        }
        if input.len() == 64 && input.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                "a 64-character hex string is an image id, not a repository name".into(),
            ));
        }
        let (name_and_tag, digest) = match input.split_once('@') {
            Some((n, d)) => (
                n,
                Some(Digest::parse(d).map_err(|e| invalid(e.to_string()))?),
            ),
            None => (input, None),
        };
        let (registry, remainder) = split_registry(name_and_tag);
        let (path, tag) = match remainder.rfind(':') {
            Some(i) if !remainder[i..].contains('/') => {
                (&remainder[..i], Some(remainder[i + 1..].to_string()))
            }
            _ => (remainder, None),
        };
        validate_registry(&registry).map_err(&invalid)?;
        if path.to_lowercase() != path {
            return Err(invalid(format!(
                "repository name {path:?} must be lower case"
            )));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        validate_repository(&repository).map_err(&invalid)?;
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(invalid(format!(
                "repository name is longer than {MAX_NAME_LEN} characters"
            )));
        }
        if let Some(tag) = &tag {
            validate_tag(tag).map_err(&invalid)?;
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry as users write it and credentials are keyed: `docker.io`, `localhost:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host (and port) the registry API is served from: `registry-1.docker.io` for Docker
    /// Hub, [`Reference::registry`] otherwise.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// The repository path: `library/busybox`, `a/b`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What goes after `/manifests/`: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.as_str(),
            (None, Some(t)) => t,
            (None, None) => "latest",
        }
    }

    /// The same repository pinned to `digest` (the tag is dropped).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// The same repository with `tag` and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference> {
        validate_tag(tag).map_err(|reason| Error::InvalidReference {
            reference: format!("{}:{tag}", self.name()),
            reason,
        })?;
        Ok(Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        })
    }

    /// Another repository on the same registry, with the same tag/digest.
    pub fn with_repository(&self, repository: &str) -> Result<Reference> {
        validate_repository(repository).map_err(|reason| Error::InvalidReference {
            reference: format!("{}/{repository}", self.registry),
            reason,
        })?;
        Ok(Reference {
            registry: self.registry.clone(),
            repository: repository.to_string(),
            tag: self.tag.clone(),
            digest: self.digest.clone(),
        })
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form docker prints: `busybox:latest`, `user/app:1`, `localhost:5000/a:t`.
    pub fn familiar(&self) -> String {
        let mut out = if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        };
        push_suffix(&mut out, self.tag.as_deref(), self.digest.as_ref());
        out
    }
}

fn push_suffix(out: &mut String, tag: Option<&str>, digest: Option<&Digest>) {
    if let Some(t) = tag {
        out.push(':');
        out.push_str(t);
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d.as_str());
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        push_suffix(&mut s, self.tag.as_deref(), self.digest.as_ref());
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
    fn from_str(s: &str) -> Result<Reference> {
        Reference::parse(s)
    }
}

/// The API host for a registry name: `docker.io` maps to `registry-1.docker.io`.
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

/// Normalises what a user passes to `lade login`/`logout`: strips `https://` and any path, maps
/// Docker Hub's aliases (`index.docker.io`, `registry-1.docker.io`,
/// `https://index.docker.io/v1/`) to `docker.io`, and validates the host.
pub fn normalize_registry(input: &str) -> Result<String> {
    let trimmed = input.trim();
    let without_scheme = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .unwrap_or(trimmed);
    let host = without_scheme.split('/').next().unwrap_or_default();
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB,
        h => h,
    };
    validate_registry(host).map_err(|reason| Error::InvalidReference {
        reference: input.chars().take(300).collect(),
        reason,
    })?;
    Ok(host.to_string())
}

/// docker's `splitDockerDomain`.
fn split_registry(name: &str) -> (String, &str) {
    let (registry, remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    };
    let registry = if registry == "index.docker.io" {
        DOCKER_HUB
    } else {
        registry
    };
    (registry.to_string(), remainder)
}

fn validate_registry(registry: &str) -> std::result::Result<(), String> {
    let bad = || format!("invalid registry host {registry:?}");
    if registry.is_empty() {
        return Err(bad());
    }
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        // IPv6 literal: [addr] or [addr]:port
        let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
        if addr.is_empty()
            || !addr
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(bad());
        }
        match after {
            "" => return Ok(()),
            p => (None, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match registry.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(registry), None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
    }
    if let Some(host) = host {
        for label in host.split('.') {
            let ok = !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(bad());
            }
        }
    }
    Ok(())
}

/// path-component := [a-z0-9]+ (separator [a-z0-9]+)*, separator := [_.] | __ | -+
fn validate_repository(repository: &str) -> std::result::Result<(), String> {
    if repository.is_empty() {
        return Err("empty repository name".into());
    }
    if repository.len() > MAX_NAME_LEN {
        return Err(format!(
            "repository name is longer than {MAX_NAME_LEN} characters"
        ));
    }
    for component in repository.split('/') {
        if !valid_path_component(component) {
            return Err(format!(
                "invalid repository path component {component:?}: use lower-case letters, digits and single separators (. _ __ -)"
            ));
        }
    }
    Ok(())
}

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
        // a separator run
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

fn validate_tag(tag: &str) -> std::result::Result<(), String> {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let ok = !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {tag:?}: up to {MAX_TAG_LEN} letters, digits, _ . -, not starting with . or -"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("user/app", "docker.io/user/app:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            (
                "index.docker.io/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("docker.io/user/app:v1", "docker.io/user/app:v1"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/a/b:t", "localhost:5000/a/b:t"),
            ("127.0.0.1:5000/a", "127.0.0.1:5000/a:latest"),
            ("[::1]:5000/a:t", "[::1]:5000/a:t"),
            (
                "ghcr.io/o/r/deep/path:1.0-rc_1",
                "ghcr.io/o/r/deep/path:1.0-rc_1",
            ),
            ("Registry/app", "Registry/app:latest"),
            // a single component with a port-like suffix is a Hub repository with a tag
            ("foo:5000", "docker.io/library/foo:5000"),
            ("a.b-c/d__e.f", "a.b-c/d__e.f:latest"),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input), want, "{input}");
        }
    }

    #[test]
    fn digests_and_tags() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().as_str(), D);
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.familiar(), format!("busybox@{D}"));

        let r = Reference::parse(&format!("localhost:5000/x:t@{D}")).unwrap();
        assert_eq!(r.tag(), Some("t"));
        assert_eq!(r.manifest_reference(), D, "the digest wins over the tag");
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "x");

        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.manifest_reference(), "latest");
        assert_eq!(r.familiar(), "busybox:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(
            Reference::parse("localhost:5000/a").unwrap().api_host(),
            "localhost:5000"
        );
        let pinned = r.with_digest(Digest::parse(D).unwrap());
        assert_eq!(pinned.tag(), None);
        assert_eq!(
            r.with_tag("v2").unwrap().to_string(),
            "docker.io/library/busybox:v2"
        );
        assert_eq!(
            r.with_repository("other/repo").unwrap().to_string(),
            "docker.io/other/repo:latest"
        );
        assert!(r.with_tag("-bad").is_err());
    }

    #[test]
    fn rejects_invalid() {
        let long_tag = format!("busybox:{}", "a".repeat(129));
        let long_name = format!("localhost/{}", "a".repeat(250));
        let bad = [
            "",
            "Busybox",
            "docker.io/Busybox",
            "busybox:",
            "busybox:-tag",
            "busybox:.tag",
            "busybox:ta/g",
            "busybox@sha256:abc",
            "busybox@",
            "a//b",
            "a/",
            "/a",
            "a/-b",
            "a/b-",
            "a..b",
            "a___b",
            "local host/a",
            "host:port/a",
            "[zz]/a",
            "-bad.io/a",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            &long_tag,
            &long_name,
        ];
        for b in bad {
            assert!(Reference::parse(b).is_err(), "{b:?} accepted");
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
