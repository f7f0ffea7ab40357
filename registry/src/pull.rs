//! Pull side: manifests by tag or digest, platform resolution, verified blob downloads with
//! resume, and bounded-concurrency layer downloads.

use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE,
};
use reqwest::{Method, StatusCode};
use tokio::io::AsyncWriteExt;

use crate::auth::Scope;
use crate::client::{join, run_bounded, Client, ErrorContext, RegistryState, Req, ReqBody};
use crate::error::{Error, Result};
use crate::manifest::{
    Descriptor, ImageManifest, Manifest, ManifestKind, Platform, MANIFEST_ACCEPT, MAX_MANIFEST_SIZE,
};
use crate::progress::{BlobSink, Progress, ProgressFn};
use lade_cache::{Digest, Hasher, Reference};

/// A manifest as fetched: the exact bytes (what the digest covers), verified.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The reference pinned to the manifest's digest (`repo@sha256:...`).
    pub reference: Reference,
    pub digest: Digest,
    /// The effective media type (see [`Manifest::parse`]).
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
}

impl FetchedManifest {
    /// A descriptor for this manifest (as an index entry would describe it).
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            &self.media_type,
            self.digest.clone(),
            self.bytes.len() as u64,
        )
    }
}

/// An image resolved for one platform.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The index the tag pointed to, when it pointed to one.
    pub index: Option<FetchedManifest>,
    /// The platform's image manifest (its `digest` is the image's repo digest for this platform).
    pub manifest: FetchedManifest,
    /// `manifest` parsed: config and layer descriptors, in order.
    pub image: ImageManifest,
}

impl Client {
    /// Fetches the manifest `reference` names (tag or digest) with every supported `Accept`,
    /// size-limited, digest-verified (against the pinned digest and the `Docker-Content-Digest`
    /// header) and parsed with media-type checks.
    pub async fn fetch_manifest(&self, reference: &Reference) -> Result<FetchedManifest> {
        let reg = self.registry(reference.registry());
        let operation = format!("GET manifest {reference}");
        let mut resp = self
            .request_manifest(&reg, reference, Method::GET, &operation)
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .error_from(&reg, resp, &operation, ErrorContext::Manifest(reference))
                .await);
        }
        let too_large = || Error::TooLarge {
            what: format!("manifest {reference}"),
            limit: MAX_MANIFEST_SIZE,
        };
        if header_u64(resp.headers(), CONTENT_LENGTH.as_str())
            .is_some_and(|n| n > MAX_MANIFEST_SIZE)
        {
            return Err(too_large());
        }
        let content_type = header_str(resp.headers(), CONTENT_TYPE.as_str());
        let header_digest = header_str(resp.headers(), "docker-content-digest");
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if (bytes.len() + c.len()) as u64 > MAX_MANIFEST_SIZE {
                        return Err(too_large());
                    }
                    bytes.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(Error::Transport {
                        registry: reg.name.clone(),
                        operation,
                        detail: crate::client::error_chain(&e.without_url()),
                    })
                }
            }
        }
        let digest = Digest::of(&bytes);
        let what = format!("manifest {reference}");
        if let Some(pinned) = reference.digest() {
            if pinned != &digest {
                return Err(Error::DigestMismatch {
                    what,
                    expected: pinned.clone(),
                    actual: digest,
                });
            }
        }
        if let Some(h) = header_digest {
            // Only sha256 is comparable; registries use nothing else for manifests.
            if h.starts_with("sha256:") {
                let claimed = Digest::parse(&h).map_err(|_| Error::Protocol {
                    registry: reg.name.clone(),
                    operation: operation.clone(),
                    reason: format!("invalid Docker-Content-Digest {h:?}"),
                })?;
                if claimed != digest {
                    return Err(Error::DigestMismatch {
                        what,
                        expected: claimed,
                        actual: digest,
                    });
                }
            }
        }
        let manifest = Manifest::parse(&bytes, content_type.as_deref(), &reference.to_string())?;
        Ok(FetchedManifest {
            reference: reference.with_digest(digest.clone()),
            digest,
            media_type: manifest.media_type().to_string(),
            bytes,
            manifest,
        })
    }

    /// `HEAD` of a manifest: its descriptor (digest, size, media type) without the body, or
    /// `None` when the tag or digest does not exist. Cheap way to see whether a tag moved.
    pub async fn head_manifest(&self, reference: &Reference) -> Result<Option<Descriptor>> {
        let reg = self.registry(reference.registry());
        let operation = format!("HEAD manifest {reference}");
        let resp = self
            .request_manifest(&reg, reference, Method::HEAD, &operation)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self
                .error_from(&reg, resp, &operation, ErrorContext::Manifest(reference))
                .await);
        }
        let digest = header_str(resp.headers(), "docker-content-digest")
            .and_then(|d| Digest::parse(&d).ok());
        let size = header_u64(resp.headers(), CONTENT_LENGTH.as_str());
        let media_type = header_str(resp.headers(), CONTENT_TYPE.as_str()).unwrap_or_default();
        match (digest, size) {
            (Some(d), Some(s)) => Ok(Some(Descriptor::new(&media_type, d, s))),
            // The registry does not say: fetch and hash.
            _ => Ok(Some(self.fetch_manifest(reference).await?.descriptor())),
        }
    }

    /// Sends `method` (`GET` or `HEAD`) for the manifest `reference` names, accepting every
    /// supported manifest type, with pull scope. The status is the caller's to check.
    async fn request_manifest(
        &self,
        reg: &RegistryState,
        reference: &Reference,
        method: Method,
        operation: &str,
    ) -> Result<reqwest::Response> {
        let ep = self.endpoint(reg).await?;
        let url = join(
            &ep.base,
            &format!(
                "v2/{}/manifests/{}",
                reference.repository(),
                reference.manifest_reference()
            ),
        )?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let scopes = [Scope::pull(reference.repository())];
        self.execute(
            reg,
            Req {
                method,
                url,
                headers,
                body: ReqBody::Empty,
                scopes: &scopes,
                operation: operation.to_string(),
            },
        )
        .await
    }

    /// Resolves `reference` to one image manifest: follows an index to the entry for
    /// `platform` (and verifies that entry's digest and size).
    pub async fn resolve_image(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<ResolvedImage> {
        let top = self.fetch_manifest(reference).await?;
        let index = match &top.manifest {
            Manifest::Image(m) => {
                return Ok(ResolvedImage {
                    index: None,
                    image: m.clone(),
                    manifest: top,
                })
            }
            Manifest::Index(i) => i.clone(),
        };
        let entry = index
            .select(platform)
            .ok_or_else(|| Error::PlatformNotFound {
                reference: reference.to_string(),
                platform: platform.to_string(),
                available: {
                    let p = index.platforms();
                    if p.is_empty() {
                        "none".to_string()
                    } else {
                        p.join(", ")
                    }
                },
            })?;
        if entry.size > MAX_MANIFEST_SIZE {
            return Err(Error::TooLarge {
                what: format!("manifest {}", entry.digest),
                limit: MAX_MANIFEST_SIZE,
            });
        }
        let child = self
            .fetch_manifest(&reference.with_digest(entry.digest.clone()))
            .await?;
        if child.bytes.len() as u64 != entry.size {
            return Err(Error::SizeMismatch {
                what: format!("manifest {} listed in {reference}", entry.digest),
                expected: entry.size,
                actual: child.bytes.len() as u64,
            });
        }
        let image = match &child.manifest {
            Manifest::Image(m) => m.clone(),
            Manifest::Index(_) => {
                return Err(Error::InvalidManifest {
                    what: child.reference.to_string(),
                    reason: format!(
                        "the {platform} entry of {reference} is another index, expected an {}",
                        ManifestKind::Image
                    ),
                })
            }
        };
        Ok(ResolvedImage {
            index: Some(top),
            manifest: child,
            image,
        })
    }

    /// Downloads a small blob (an image config) into memory, verified; refuses blobs whose
    /// descriptor is larger than `limit` bytes.
    pub async fn fetch_blob_bytes(
        &self,
        repository: &Reference,
        desc: &Descriptor,
        limit: u64,
    ) -> Result<Vec<u8>> {
        if desc.size > limit {
            return Err(Error::TooLarge {
                what: format!("blob {}", desc.digest),
                limit,
            });
        }
        let mut buf = Vec::with_capacity(usize::try_from(desc.size).unwrap_or(0));
        self.fetch_blob(repository, desc, &mut buf, &ProgressFn::none())
            .await?;
        Ok(buf)
    }

    /// Streams blob `desc` from `repository`'s repo into `sink`, verifying size and digest.
    ///
    /// Memory stays bounded (chunks are written as they arrive). A broken or stalled
    /// connection is resumed with `Range` from the last byte written (or restarted from zero
    /// through [`BlobSink::reset`] when the registry ignores ranges), up to the retry policy's
    /// attempts. More bytes than `desc.size` fail at once. On `Err` the sink holds garbage and
    /// must be discarded; on `Ok` it holds exactly the blob.
    pub async fn fetch_blob<S: BlobSink + ?Sized>(
        &self,
        repository: &Reference,
        desc: &Descriptor,
        sink: &mut S,
        progress: &ProgressFn,
    ) -> Result<()> {
        let reg = self.registry(repository.registry());
        let ep = self.endpoint(&reg).await?;
        let url = join(
            &ep.base,
            &format!("v2/{}/blobs/{}", repository.repository(), desc.digest),
        )?;
        let digest = &desc.digest;
        let total = desc.size;
        let what = format!("blob {digest} of {}", repository.name());
        let operation = format!("GET {what}");
        let scopes = [Scope::pull(repository.repository())];
        let max_attempts = self.config().retry.max_attempts;
        let sink_err = |e: std::io::Error| Error::io(format!("writing {what}"), e);

        let mut hasher = Hasher::new();
        let mut failures = 0u32;
        let mut resumed = false;
        let mut restarted_after_mismatch = false;
        progress.emit(Progress::Started {
            digest,
            done: 0,
            total,
        });
        loop {
            let offset = hasher.len();
            let mut headers = HeaderMap::new();
            if offset > 0 {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes={offset}-")) {
                    headers.insert(RANGE, v);
                }
            }
            let mut resp = self
                .execute(
                    &reg,
                    Req {
                        method: Method::GET,
                        url: url.clone(),
                        headers,
                        body: ReqBody::Empty,
                        scopes: &scopes,
                        operation: operation.clone(),
                    },
                )
                .await?;
            let status = resp.status();
            // Why the answer cannot continue what the sink holds (then it starts over).
            let unusable = match status {
                StatusCode::OK => None,
                StatusCode::PARTIAL_CONTENT => {
                    let start = header_str(resp.headers(), CONTENT_RANGE.as_str())
                        .and_then(|r| content_range_start(&r));
                    if offset > 0 && start == Some(offset) {
                        resumed = true;
                        None
                    } else {
                        // A range we did not ask for.
                        Some("the registry answers ranges it was not asked for")
                    }
                }
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    Some("the registry refuses to resume the download")
                }
                _ => {
                    let context = ErrorContext::Blob {
                        repository: repository.repository(),
                        digest,
                    };
                    return Err(self.error_from(&reg, resp, &operation, context).await);
                }
            };
            if let Some(reason) = unusable {
                drop(resp);
                sink.reset().await.map_err(sink_err)?;
                hasher = Hasher::new();
                failures += 1;
                if failures >= max_attempts {
                    return Err(Error::Protocol {
                        registry: reg.name.clone(),
                        operation,
                        reason: reason.into(),
                    });
                }
                continue;
            }
            // A full answer to a request for a range: the sink's bytes are replaced.
            let restart = status == StatusCode::OK && offset > 0;
            // The registry says how big its blob is: a different size is wrong content, not a
            // transfer problem to retry.
            let announced = match status {
                StatusCode::OK => header_u64(resp.headers(), CONTENT_LENGTH.as_str()),
                _ => header_str(resp.headers(), CONTENT_RANGE.as_str())
                    .and_then(|r| r.rsplit_once('/').and_then(|(_, t)| t.trim().parse().ok())),
            };
            if let Some(announced) = announced {
                if announced != total {
                    return Err(Error::SizeMismatch {
                        what,
                        expected: total,
                        actual: announced,
                    });
                }
            }
            if restart {
                sink.reset().await.map_err(sink_err)?;
                hasher = Hasher::new();
                progress.emit(Progress::Started {
                    digest,
                    done: 0,
                    total,
                });
            }
            let streamed: std::result::Result<(), String> = loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        let done = hasher.len() + chunk.len() as u64;
                        if done > total {
                            return Err(Error::SizeMismatch {
                                what,
                                expected: total,
                                actual: done,
                            });
                        }
                        hasher.update(&chunk);
                        sink.write_all(&chunk).await.map_err(sink_err)?;
                        progress.emit(Progress::Advanced {
                            digest,
                            done,
                            total,
                        });
                    }
                    Ok(None) if hasher.len() < total => {
                        break Err(format!(
                            "connection closed after {} of {total} bytes",
                            hasher.len()
                        ))
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(crate::client::error_chain(&e.without_url())),
                }
            };
            match streamed {
                Ok(()) => {
                    sink.flush().await.map_err(sink_err)?;
                    match verify(hasher.clone(), digest, total, &what) {
                        Ok(()) => {
                            progress.emit(Progress::Finished { digest, total });
                            return Ok(());
                        }
                        Err(Error::DigestMismatch { .. })
                            if resumed && !restarted_after_mismatch =>
                        {
                            // The resumed parts may not belong together: fetch it whole once.
                            restarted_after_mismatch = true;
                            resumed = false;
                            sink.reset().await.map_err(sink_err)?;
                            hasher = Hasher::new();
                            progress.emit(Progress::Retrying {
                                digest,
                                attempt: failures + 1,
                                done: 0,
                                error: "digest mismatch after resuming",
                            });
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(detail) => {
                    failures += 1;
                    if failures >= max_attempts {
                        return Err(Error::RetriesExhausted {
                            registry: reg.name.clone(),
                            operation,
                            attempts: failures,
                            last: detail,
                        });
                    }
                    progress.emit(Progress::Retrying {
                        digest,
                        attempt: failures + 1,
                        done: hasher.len(),
                        error: &detail,
                    });
                    self.pause(failures).await;
                }
            }
        }
    }

    /// Downloads several blobs of one repository, at most
    /// [`ClientConfig::max_concurrent_downloads`](crate::ClientConfig) at a time, each into its
    /// own sink. Returns the sinks in input order once all are verified; the first failure
    /// cancels the rest and is returned.
    pub async fn fetch_blobs<S: BlobSink + 'static>(
        &self,
        repository: &Reference,
        jobs: Vec<(Descriptor, S)>,
        progress: &ProgressFn,
    ) -> Result<Vec<(Descriptor, S)>> {
        let tasks = jobs
            .into_iter()
            .map(|(desc, mut sink)| {
                let client = self.clone();
                let repository = repository.clone();
                let progress = progress.clone();
                async move {
                    client
                        .fetch_blob(&repository, &desc, &mut sink, &progress)
                        .await
                        .map(|()| (desc, sink))
                }
            })
            .collect();
        run_bounded(self.config().max_concurrent_downloads, tasks, || {
            Error::Protocol {
                registry: repository.registry().to_string(),
                operation: "download".into(),
                reason: "a download task was cancelled".into(),
            }
        })
        .await
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

pub(crate) fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

pub(crate) fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    header_str(h, name).and_then(|s| s.parse().ok())
}

/// `bytes 100-199/200` -> 100.
fn content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    rest.split('-').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_reports_size_then_digest() {
        let d = Digest::of(b"abc");
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

    #[test]
    fn content_range() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes 0-0/*"), Some(0));
        assert_eq!(content_range_start("bytes */200"), None);
        assert_eq!(content_range_start("items 1-2/3"), None);
    }
}
