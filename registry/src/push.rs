//! Push side: blob existence checks, cross-repository mounts, monolithic, chunked and
//! streamed uploads, and manifest uploads.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{
    HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION,
};
use reqwest::{Method, StatusCode, Url};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};

use crate::auth::Scope;
use crate::client::{join, run_bounded, Client, ErrorContext, RegistryState, Req, ReqBody};
use crate::error::{Error, Result};
use crate::manifest::{Descriptor, Manifest};
use crate::progress::{BlobSource, Progress, ProgressFn};
use crate::pull::header_str;
use lade_cache::{Digest, Hasher, Reference};

/// Read size for upload bodies (and the granularity of upload progress).
const UPLOAD_READ: usize = 256 << 10;
/// Largest chunk of a streamed upload held in memory before its `PATCH` (a larger
/// `LADE_PUSH_CHUNK_SIZE` still applies to uploads read from the blob file).
const STREAM_CHUNK_MAX: u64 = 64 << 20;

/// What [`Client::push_blob`] had to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushedBlob {
    /// The repository already had the blob: no bytes sent.
    Exists,
    /// Linked from another repository of the same registry: no bytes sent.
    Mounted { from: String },
    /// Uploaded.
    Uploaded,
}

impl Client {
    /// `HEAD` of a blob in `repository`'s repo: `Some(size)` when the registry has it.
    pub async fn blob_exists(
        &self,
        repository: &Reference,
        digest: &Digest,
    ) -> Result<Option<u64>> {
        let reg = self.registry(repository.registry());
        let ep = self.endpoint(&reg).await?;
        let url = join(
            &ep.base,
            &format!("v2/{}/blobs/{digest}", repository.repository()),
        )?;
        let operation = format!("HEAD blob {digest} in {}", repository.name());
        // Push scope: the same token then serves the upload that usually follows.
        let scopes = [Scope::push(repository.repository())];
        let resp = self
            .execute(
                &reg,
                Req {
                    method: Method::HEAD,
                    url,
                    headers: HeaderMap::new(),
                    body: ReqBody::Empty,
                    scopes: &scopes,
                    operation: operation.clone(),
                },
            )
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(Some(
                crate::pull::header_u64(resp.headers(), CONTENT_LENGTH.as_str()).unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self
                .error_from(&reg, resp, &operation, ErrorContext::Other)
                .await),
        }
    }

    /// Makes blob `desc` present in `target`'s repository, sending as little as possible:
    /// nothing if it is already there (`HEAD`), a cross-repository mount from the first of
    /// `mount_from` (other repositories on the same registry known to hold it) that the registry
    /// accepts, else an upload of `source` (monolithic, or chunked per
    /// [`ClientConfig::upload_chunk_size`](crate::ClientConfig)). A failed upload is restarted
    /// from scratch with backoff. The registry verifies the digest when the upload completes.
    pub async fn push_blob(
        &self,
        target: &Reference,
        desc: &Descriptor,
        source: &BlobSource,
        mount_from: &[String],
        progress: &ProgressFn,
    ) -> Result<PushedBlob> {
        let digest = &desc.digest;
        let reg = self.registry(target.registry());
        let mut session = match self.link(target, digest, mount_from, progress).await? {
            Linked::Done(p) => return Ok(p),
            Linked::Session(url) => Some(url),
            Linked::Missing => None,
        };
        let max_attempts = self.config().retry.max_attempts;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let location = match session.take() {
                Some(l) => l,
                None => self.start_upload(&reg, target).await?,
            };
            progress.emit(Progress::Started {
                digest,
                done: 0,
                total: desc.size,
            });
            let configured = self.config().upload_chunk_size;
            let chunked = reg.upload_chunk(configured).filter(|c| desc.size > *c);
            let result = match chunked {
                Some(chunk) => {
                    self.upload_chunked(&reg, target, location, desc, source, chunk, progress)
                        .await
                }
                None => {
                    self.upload_monolithic(&reg, target, location, desc, source, progress)
                        .await
                }
            };
            match result {
                Ok(()) => {
                    progress.emit(Progress::Finished {
                        digest,
                        total: desc.size,
                    });
                    return Ok(PushedBlob::Uploaded);
                }
                // The whole blob in one request is too large for the registry or a proxy in
                // front of it (nginx's client_max_body_size): upload it in chunks instead, in a
                // new session. Not an attempt: the chunk size only ever goes down.
                Err(e) if chunked.is_none() && e.is_too_large() => {
                    if reg.shrink_chunk(desc.size, configured).is_none() {
                        return Err(refused_even_in_chunks(e, desc.size));
                    }
                    attempt -= 1;
                }
                Err(e) if e.is_transient() && attempt < max_attempts => {
                    let text = e.to_string();
                    progress.emit(Progress::Retrying {
                        digest,
                        attempt: attempt + 1,
                        done: 0,
                        error: &text,
                    });
                    self.pause(attempt).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Makes blob `desc` present in `target`'s repository without sending its bytes: `Some`
    /// when the registry already has it there (`HEAD`) or linked it from one of `mount_from`
    /// (repositories of the same registry believed to hold it), `None` when it must be
    /// uploaded. For a blob the caller does not have at hand (only known to be on the
    /// registry), before producing it.
    pub async fn link_blob(
        &self,
        target: &Reference,
        desc: &Descriptor,
        mount_from: &[String],
        progress: &ProgressFn,
    ) -> Result<Option<PushedBlob>> {
        Ok(
            match self
                .link(target, &desc.digest, mount_from, progress)
                .await?
            {
                Linked::Done(p) => Some(p),
                // The registry opened an upload session instead of mounting; it expires unused.
                Linked::Session(_) | Linked::Missing => None,
            },
        )
    }

    async fn link(
        &self,
        target: &Reference,
        digest: &Digest,
        mount_from: &[String],
        progress: &ProgressFn,
    ) -> Result<Linked> {
        if self.blob_exists(target, digest).await?.is_some() {
            progress.emit(Progress::Exists { digest });
            return Ok(Linked::Done(PushedBlob::Exists));
        }
        let reg = self.registry(target.registry());
        for from in mount_from
            .iter()
            .filter(|f| f.as_str() != target.repository())
        {
            match self.mount(&reg, target, digest, from).await {
                Ok(Mount::Mounted) => {
                    progress.emit(Progress::Mounted { digest, from });
                    return Ok(Linked::Done(PushedBlob::Mounted { from: from.clone() }));
                }
                Ok(Mount::Session(url)) => return Ok(Linked::Session(url)),
                // No read access to the source, or it does not exist: upload instead.
                Err(
                    Error::Denied { .. } | Error::AuthFailed { .. } | Error::AuthRequired { .. },
                )
                | Err(Error::Registry { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Linked::Missing)
    }

    /// [`Client::push_blob`] for several blobs of one image, at most
    /// [`ClientConfig::max_concurrent_uploads`](crate::ClientConfig) at a time. Each job is a
    /// descriptor, its bytes and the repositories it may be mounted from. Results come back in
    /// input order; the first failure cancels the rest and is returned.
    pub async fn push_blobs(
        &self,
        target: &Reference,
        jobs: Vec<(Descriptor, BlobSource, Vec<String>)>,
        progress: &ProgressFn,
    ) -> Result<Vec<PushedBlob>> {
        let tasks = jobs
            .into_iter()
            .map(|(desc, source, mount_from)| {
                let client = self.clone();
                let target = target.clone();
                let progress = progress.clone();
                async move {
                    client
                        .push_blob(&target, &desc, &source, &mount_from, &progress)
                        .await
                }
            })
            .collect();
        run_bounded(self.config().max_concurrent_uploads, tasks, || {
            Error::Protocol {
                registry: target.registry().to_string(),
                operation: "upload".into(),
                reason: "an upload task was cancelled".into(),
            }
        })
        .await
    }

    /// Uploads a blob whose digest is not known in advance (e.g. a layer compressed on the
    /// fly): one streamed `PATCH`, hashing as it goes, then `PUT ?digest=`. Not retried (the
    /// reader is consumed); returns the digest and size the registry accepted.
    pub async fn upload_stream<R>(
        &self,
        target: &Reference,
        reader: R,
        progress: &ProgressFn,
    ) -> Result<(Digest, u64)>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        self.upload_byte_stream(target, reader_stream(reader, u64::MAX), progress)
            .await
    }

    /// [`Client::upload_stream`] from a stream of chunks. An `Err` item aborts the request, so
    /// a producer that fails half-way never completes an upload.
    pub async fn upload_byte_stream<S>(
        &self,
        target: &Reference,
        chunks: S,
        progress: &ProgressFn,
    ) -> Result<(Digest, u64)>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let reg = self.registry(target.registry());
        let location = self.start_upload(&reg, target).await?;
        if let Some(chunk) = reg.upload_chunk(self.config().upload_chunk_size) {
            return self
                .upload_stream_chunked(&reg, target, location, chunks, chunk, progress)
                .await;
        }
        let hasher = Arc::new(Mutex::new(Hasher::new()));
        let tap = hasher.clone();
        let stream = chunks.map(move |chunk| {
            if let Ok(c) = &chunk {
                if let Ok(mut h) = tap.lock() {
                    h.update(c);
                }
            }
            chunk
        });
        let headers = octet_stream();
        let operation = format!("PATCH upload to {}", target.name());
        let scopes = [Scope::push(target.repository())];
        let resp = self
            .execute(
                &reg,
                Req {
                    method: Method::PATCH,
                    url: location.clone(),
                    headers,
                    body: ReqBody::Once(Some(reqwest::Body::wrap_stream(stream))),
                    scopes: &scopes,
                    operation: operation.clone(),
                },
            )
            .await?;
        if resp.status() != StatusCode::ACCEPTED && !resp.status().is_success() {
            let e = self
                .error_from(&reg, resp, &operation, ErrorContext::Other)
                .await;
            if e.is_too_large() {
                // The stream is spent; the next uploads to this registry go in chunks (the
                // caller pushes this blob again from its file).
                let sent = hasher.lock().map_or(0, |h| h.len());
                if reg
                    .shrink_chunk(sent, self.config().upload_chunk_size)
                    .is_none()
                {
                    return Err(refused_even_in_chunks(e, sent));
                }
            }
            return Err(e);
        }
        let location = self.location(&reg, &resp, &location, &operation)?;
        let hasher = hasher
            .lock()
            .map(|h| h.clone())
            .map_err(|_| Error::Protocol {
                registry: reg.name.clone(),
                operation: operation.clone(),
                reason: "hashing failed".into(),
            })?;
        let size = hasher.len();
        let digest = hasher.finish();
        progress.emit(Progress::Advanced {
            digest: &digest,
            done: size,
            total: size,
        });
        self.finish_upload(&reg, target, location, &digest, ReqBody::Empty, 0)
            .await?;
        progress.emit(Progress::Finished {
            digest: &digest,
            total: size,
        });
        Ok((digest, size))
    }

    /// [`Client::upload_byte_stream`] in `PATCH` requests of at most `chunk` bytes (buffered
    /// in memory, one chunk at a time), hashing on the way; a chunk answered `413` is sent
    /// again in smaller pieces.
    async fn upload_stream_chunked<S>(
        &self,
        reg: &RegistryState,
        target: &Reference,
        mut location: Url,
        chunks: S,
        chunk: u64,
        progress: &ProgressFn,
    ) -> Result<(Digest, u64)>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let mut chunks = std::pin::pin!(chunks);
        let mut hasher = Hasher::new();
        let mut buf = bytes::BytesMut::new();
        // A streamed chunk is held in memory until sent: at most STREAM_CHUNK_MAX of it.
        let mut size = chunk.min(STREAM_CHUNK_MAX);
        let mut offset = 0u64;
        let mut ended = false;
        loop {
            while !ended && (buf.len() as u64) < size {
                match chunks.next().await {
                    Some(Ok(b)) => {
                        hasher.update(&b);
                        buf.extend_from_slice(&b);
                    }
                    Some(Err(e)) => {
                        return Err(Error::io(
                            format!("reading the blob to upload to {}", target.name()),
                            e,
                        ))
                    }
                    None => ended = true,
                }
            }
            if buf.is_empty() {
                break;
            }
            let n = buf.len().min(usize::try_from(size).unwrap_or(usize::MAX));
            let piece = buf.split_to(n).freeze();
            match self
                .patch_chunk(
                    reg,
                    target,
                    &location,
                    offset,
                    n as u64,
                    ReqBody::Bytes(piece.clone()),
                    "blob",
                )
                .await
            {
                Ok(next) => {
                    location = next;
                    offset += n as u64;
                }
                Err(e) if e.is_too_large() => {
                    size = reg
                        .shrink_chunk(n as u64, self.config().upload_chunk_size)
                        .ok_or_else(|| refused_even_in_chunks(e, n as u64))?;
                    let mut again = bytes::BytesMut::from(&piece[..]);
                    again.extend_from_slice(&buf);
                    buf = again;
                }
                Err(e) => return Err(e),
            }
        }
        let total = hasher.len();
        let digest = hasher.finish();
        progress.emit(Progress::Advanced {
            digest: &digest,
            done: total,
            total,
        });
        self.finish_upload(reg, target, location, &digest, ReqBody::Empty, 0)
            .await?;
        progress.emit(Progress::Finished {
            digest: &digest,
            total,
        });
        Ok((digest, total))
    }

    /// One `PATCH` of `len` bytes at `offset` of an upload session; returns the session's next
    /// location. `what` names the blob in the operation.
    #[allow(clippy::too_many_arguments)]
    async fn patch_chunk(
        &self,
        reg: &RegistryState,
        target: &Reference,
        location: &Url,
        offset: u64,
        len: u64,
        body: ReqBody,
        what: &str,
    ) -> Result<Url> {
        let operation = format!("PATCH {what} to {}", target.name());
        let scopes = [Scope::push(target.repository())];
        let mut headers = octet_stream();
        headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        if let Ok(v) = HeaderValue::from_str(&format!("{offset}-{}", offset + len - 1)) {
            headers.insert(CONTENT_RANGE, v);
        }
        let resp = self
            .execute(
                reg,
                Req {
                    method: Method::PATCH,
                    url: location.clone(),
                    headers,
                    body,
                    scopes: &scopes,
                    operation: operation.clone(),
                },
            )
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self
                .error_from(reg, resp, &operation, ErrorContext::Other)
                .await);
        }
        self.location(reg, &resp, location, &operation)
    }

    /// Pushes a manifest under `target`'s tag (or digest) with `media_type` as its
    /// `Content-Type`, after checking it parses as that type. Returns its digest (checked
    /// against the registry's `Docker-Content-Digest`).
    pub async fn put_manifest(
        &self,
        target: &Reference,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest> {
        Manifest::parse(bytes, Some(media_type), &target.to_string())?;
        let digest = Digest::of(bytes);
        if let Some(pinned) = target.digest() {
            if pinned != &digest {
                return Err(Error::DigestMismatch {
                    what: format!("manifest for {target}"),
                    expected: pinned.clone(),
                    actual: digest,
                });
            }
        }
        let reg = self.registry(target.registry());
        let ep = self.endpoint(&reg).await?;
        let url = join(
            &ep.base,
            &format!(
                "v2/{}/manifests/{}",
                target.repository(),
                target.manifest_reference()
            ),
        )?;
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(media_type).map_err(|_| Error::InvalidManifest {
                what: target.to_string(),
                reason: format!("unusable media type {media_type:?}"),
            })?,
        );
        let operation = format!("PUT manifest {target}");
        let scopes = [Scope::push(target.repository())];
        let resp = self
            .execute(
                &reg,
                Req {
                    method: Method::PUT,
                    url,
                    headers,
                    body: ReqBody::Bytes(Bytes::copy_from_slice(bytes)),
                    scopes: &scopes,
                    operation: operation.clone(),
                },
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .error_from(&reg, resp, &operation, ErrorContext::Other)
                .await);
        }
        check_stored_digest(&reg, &resp, &operation, "manifest", &digest)?;
        Ok(digest)
    }

    async fn mount(
        &self,
        reg: &RegistryState,
        target: &Reference,
        digest: &Digest,
        from: &str,
    ) -> Result<Mount> {
        let operation = format!("mount {digest} from {from} into {}", target.name());
        let scopes = [Scope::push(target.repository()), Scope::pull(from)];
        let query = [("mount", digest.as_str()), ("from", from)];
        let (resp, url) = self
            .post_uploads(reg, target, &query, &scopes, &operation)
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(Mount::Mounted),
            StatusCode::ACCEPTED => {
                Ok(Mount::Session(self.location(reg, &resp, &url, &operation)?))
            }
            _ => Err(self
                .error_from(reg, resp, &operation, ErrorContext::Other)
                .await),
        }
    }

    async fn start_upload(&self, reg: &RegistryState, target: &Reference) -> Result<Url> {
        let operation = format!("POST upload to {}", target.name());
        let scopes = [Scope::push(target.repository())];
        let (resp, url) = self
            .post_uploads(reg, target, &[], &scopes, &operation)
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self
                .error_from(reg, resp, &operation, ErrorContext::Other)
                .await);
        }
        self.location(reg, &resp, &url, &operation)
    }

    /// `POST v2/<repository>/blobs/uploads/` (with `query`, if any) without a body: the start of
    /// an upload or a mount. Returns the response and the URL posted to.
    async fn post_uploads(
        &self,
        reg: &RegistryState,
        target: &Reference,
        query: &[(&str, &str)],
        scopes: &[Scope],
        operation: &str,
    ) -> Result<(reqwest::Response, Url)> {
        let ep = self.endpoint(reg).await?;
        let mut url = join(
            &ep.base,
            &format!("v2/{}/blobs/uploads/", target.repository()),
        )?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let resp = self
            .execute(
                reg,
                Req {
                    method: Method::POST,
                    url: url.clone(),
                    headers: content_length_zero(),
                    body: ReqBody::Empty,
                    scopes,
                    operation: operation.to_string(),
                },
            )
            .await?;
        Ok((resp, url))
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_monolithic(
        &self,
        reg: &RegistryState,
        target: &Reference,
        location: Url,
        desc: &Descriptor,
        source: &BlobSource,
        progress: &ProgressFn,
    ) -> Result<()> {
        let body = source_body(source, 0, desc.size, &desc.digest, progress, 0).await?;
        self.finish_upload(reg, target, location, &desc.digest, body, desc.size)
            .await
    }

    /// Uploads `source` in `PATCH` requests of `chunk` bytes; a chunk answered `413` is sent
    /// again in smaller pieces (the refused request never reached the session).
    #[allow(clippy::too_many_arguments)]
    async fn upload_chunked(
        &self,
        reg: &RegistryState,
        target: &Reference,
        mut location: Url,
        desc: &Descriptor,
        source: &BlobSource,
        chunk: u64,
        progress: &ProgressFn,
    ) -> Result<()> {
        let what = format!("blob {}", desc.digest);
        let mut chunk = chunk;
        let mut offset = 0;
        while offset < desc.size {
            let len = chunk.min(desc.size - offset);
            let body = source_body(source, offset, len, &desc.digest, progress, desc.size).await?;
            match self
                .patch_chunk(reg, target, &location, offset, len, body, &what)
                .await
            {
                Ok(next) => {
                    location = next;
                    offset += len;
                }
                Err(e) if e.is_too_large() => {
                    chunk = reg
                        .shrink_chunk(len, self.config().upload_chunk_size)
                        .ok_or_else(|| refused_even_in_chunks(e, len))?;
                }
                Err(e) => return Err(e),
            }
        }
        self.finish_upload(reg, target, location, &desc.digest, ReqBody::Empty, 0)
            .await
    }

    /// `PUT <location>?digest=` with the last (or only) bytes.
    async fn finish_upload(
        &self,
        reg: &RegistryState,
        target: &Reference,
        mut location: Url,
        digest: &Digest,
        body: ReqBody,
        len: u64,
    ) -> Result<()> {
        location
            .query_pairs_mut()
            .append_pair("digest", digest.as_str());
        let mut headers = octet_stream();
        headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        let operation = format!("PUT blob {digest} to {}", target.name());
        let scopes = [Scope::push(target.repository())];
        let resp = self
            .execute(
                reg,
                Req {
                    method: Method::PUT,
                    url: location,
                    headers,
                    body,
                    scopes: &scopes,
                    operation: operation.clone(),
                },
            )
            .await?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            let context = ErrorContext::Other;
            return Err(self.error_from(reg, resp, &operation, context).await);
        }
        check_stored_digest(reg, &resp, &operation, "blob", digest)
    }

    /// The `Location` of an upload session, resolved against the request URL.
    fn location(
        &self,
        reg: &RegistryState,
        resp: &reqwest::Response,
        base: &Url,
        operation: &str,
    ) -> Result<Url> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Protocol {
                registry: reg.name.clone(),
                operation: operation.to_string(),
                reason: "upload response without Location".into(),
            })?;
        base.join(loc).map_err(|_| Error::Protocol {
            registry: reg.name.clone(),
            operation: operation.to_string(),
            reason: format!("invalid upload Location {loc:?}"),
        })
    }
}

enum Linked {
    Done(PushedBlob),
    /// Not linked, but an upload session is open (a mount answered 202).
    Session(Url),
    Missing,
}

enum Mount {
    Mounted,
    /// The registry did not mount but opened an ordinary upload session (202).
    Session(Url),
}

/// The `413` that ends an upload: `refused` bytes (a whole blob or chunk no larger than
/// [`MIN_UPLOAD_CHUNK`](crate::MIN_UPLOAD_CHUNK)) were still too many.
fn refused_even_in_chunks(e: Error, refused: u64) -> Error {
    match e {
        Error::Registry {
            registry,
            operation,
            status,
            message,
        } => Error::Registry {
            message: format!(
                "{message}; {registry} (or a proxy in front of it) refuses request bodies of \
                 {refused} bytes, too small to split further: raise its body size limit (nginx: \
                 client_max_body_size)"
            ),
            registry,
            operation,
            status,
        },
        e => e,
    }
}

/// Headers of a request whose body is blob bytes.
fn octet_stream() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h
}

/// Refuses a response whose `Docker-Content-Digest` (when it gives a sha256 one) is not the
/// `digest` of the `what` (blob, manifest) just uploaded.
fn check_stored_digest(
    reg: &RegistryState,
    resp: &reqwest::Response,
    operation: &str,
    what: &str,
    digest: &Digest,
) -> Result<()> {
    if let Some(h) = header_str(resp.headers(), "docker-content-digest") {
        if h.starts_with("sha256:") && h != digest.as_str() {
            return Err(Error::Protocol {
                registry: reg.name.clone(),
                operation: operation.to_string(),
                reason: format!("registry stored the {what} as {h}, expected {digest}"),
            });
        }
    }
    Ok(())
}

fn content_length_zero() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_LENGTH, HeaderValue::from(0u64));
    h
}

/// A one-shot streaming body of `len` bytes of `source` from `offset`, reporting progress
/// (`base` is added to the reported count: the bytes of earlier chunks).
async fn source_body(
    source: &BlobSource,
    offset: u64,
    len: u64,
    digest: &Digest,
    progress: &ProgressFn,
    total: u64,
) -> Result<ReqBody> {
    let total = if total == 0 { len } else { total };
    let reader: Box<dyn AsyncRead + Send + Unpin> = match source {
        BlobSource::Bytes(b) => {
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
            let end = usize::try_from(offset + len)
                .unwrap_or(usize::MAX)
                .min(b.len());
            if end - start != usize::try_from(len).unwrap_or(0) {
                return Err(Error::SizeMismatch {
                    what: format!("upload source for {digest}"),
                    expected: offset + len,
                    actual: b.len() as u64,
                });
            }
            Box::new(std::io::Cursor::new(b.slice(start..end)))
        }
        BlobSource::File(path) => {
            let ctx = || format!("reading {} to upload {digest}", path.display());
            let mut f = tokio::fs::File::open(path)
                .await
                .map_err(|e| Error::io(ctx(), e))?;
            let size = f.metadata().await.map_err(|e| Error::io(ctx(), e))?.len();
            if size < offset + len {
                return Err(Error::SizeMismatch {
                    what: format!("upload source {}", path.display()),
                    expected: offset + len,
                    actual: size,
                });
            }
            f.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(|e| Error::io(ctx(), e))?;
            Box::new(f)
        }
    };
    let digest = digest.clone();
    let progress = progress.clone();
    let mut done = offset;
    let stream = reader_stream(reader, len).map(move |chunk| {
        if let Ok(c) = &chunk {
            done += c.len() as u64;
            progress.emit(Progress::Advanced {
                digest: &digest,
                done,
                total,
            });
        }
        chunk
    });
    Ok(ReqBody::Once(Some(reqwest::Body::wrap_stream(stream))))
}

/// Reads `reader` in `UPLOAD_READ` pieces, at most `limit` bytes.
fn reader_stream<R: AsyncRead + Send + Unpin + 'static>(
    reader: R,
    limit: u64,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold(
        (reader.take(limit), false),
        |(mut r, finished)| async move {
            if finished {
                return None;
            }
            let mut buf = vec![0u8; UPLOAD_READ];
            match r.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), (r, false)))
                }
                Err(e) => Some((Err(e), (r, true))),
            }
        },
    )
}
