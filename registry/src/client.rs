//! The client: configuration, per-registry endpoints (TLS, HTTP fallback), authenticated
//! requests with retries and redirects. Pull and push operations are in `pull.rs`/`push.rs`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderValue, AUTHORIZATION, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

use crate::auth::{self, AuthState, Challenge, Scope};
use crate::credentials::{Credential, CredentialStore};
use crate::error::{Error, Result};
use crate::hub::api_host;

const MAX_REDIRECTS: usize = 10;
const MAX_ERROR_BODY: usize = 64 << 10;

/// How transient failures (connection errors, 429, 5xx, broken downloads) are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per request or transfer, the first included (default 5).
    pub max_attempts: u32,
    /// Pause before the second attempt; doubled each time (default 500 ms).
    pub base_delay: Duration,
    /// Longest pause between attempts, also the cap on a registry's `Retry-After` (default 30 s).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        exp.max(retry_after.unwrap_or_default()).min(self.max_delay)
    }
}

/// Everything a [`Client`] needs to know; `Default` is anonymous HTTPS with docker's defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Where credentials come from ([`CredentialStore::from_env`] for the CLI).
    pub credentials: CredentialStore,
    /// Credentials that win over the store, per registry name (`lade login` checks new ones).
    pub credential_overrides: HashMap<String, Credential>,
    /// Registries (`host[:port]`) allowed over plain HTTP, and whose TLS certificate is not
    /// verified, like docker's `insecure-registries`. Loopback registries (`localhost`,
    /// `127.0.0.0/8`, `::1`) may fall back to plain HTTP without being listed.
    pub insecure_registries: Vec<String>,
    /// Directories laid out like `/etc/docker/certs.d`: `<dir>/<host:port>/*.crt` are extra CA
    /// roots, `*.cert` + `*.key` a client certificate. Default: docker's and containers'.
    pub certs_dirs: Vec<PathBuf>,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    /// Longest silence while reading a response; a stalled transfer fails (and is retried)
    /// after this, it never hangs.
    pub read_timeout: Duration,
    /// Blobs larger than this are uploaded in `PATCH` chunks of this size (`LADE_PUSH_CHUNK_SIZE`
    /// in [`ClientConfig::from_env`]); `None` (default) uploads every blob in one request.
    /// Either way, a registry (or a proxy in front of it) that answers `413 Request Entity Too
    /// Large` gets chunks from then on, halved until it takes them (see [`MIN_UPLOAD_CHUNK`]).
    pub upload_chunk_size: Option<u64>,
    /// Layers downloaded at once by [`Client::fetch_blobs`] (default 3, docker's).
    pub max_concurrent_downloads: usize,
    /// Blobs uploaded at once by [`Client::push_blobs`] (default 5, docker's).
    pub max_concurrent_uploads: usize,
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            credentials: CredentialStore::default(),
            credential_overrides: HashMap::new(),
            insecure_registries: Vec::new(),
            certs_dirs: vec![
                PathBuf::from("/etc/docker/certs.d"),
                PathBuf::from("/etc/containers/certs.d"),
            ],
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            upload_chunk_size: None,
            max_concurrent_downloads: 3,
            max_concurrent_uploads: 5,
            user_agent: format!("lade/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

impl ClientConfig {
    /// Defaults plus the environment: credentials from Lade's and docker's config files
    /// ([`CredentialStore::from_env`]), `LADE_CERTS_DIR` (colon-separated `certs.d`-style
    /// directories searched before docker's and containers'), `LADE_INSECURE_REGISTRIES`
    /// (comma-separated hosts, as `--insecure-registry`), `LADE_PUSH_CHUNK_SIZE` (bytes, or
    /// with a `k`/`M`/`G` suffix: [`ClientConfig::upload_chunk_size`]; `0` = one request per
    /// blob). An unreadable setting is an error.
    pub fn from_env() -> Result<ClientConfig> {
        let mut cfg = ClientConfig {
            credentials: CredentialStore::from_env(),
            ..ClientConfig::default()
        };
        if let Some(dirs) = std::env::var_os("LADE_CERTS_DIR").filter(|d| !d.is_empty()) {
            let mut dirs: Vec<PathBuf> = std::env::split_paths(&dirs).collect();
            dirs.append(&mut cfg.certs_dirs);
            cfg.certs_dirs = dirs;
        }
        if let Ok(list) = std::env::var("LADE_INSECURE_REGISTRIES") {
            for host in list.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                cfg.add_insecure_registry(host);
            }
        }
        if let Some(v) = std::env::var_os("LADE_PUSH_CHUNK_SIZE").filter(|v| !v.is_empty()) {
            let text = v.to_string_lossy();
            let size = parse_byte_size(&text).ok_or_else(|| Error::InvalidSetting {
                name: "LADE_PUSH_CHUNK_SIZE".into(),
                reason: format!(
                    "{text:?} is not a size: give bytes, optionally with a k, M or G suffix \
                     (e.g. 5M), or 0 for one request per blob"
                ),
            })?;
            if size > 0 && size < MIN_UPLOAD_CHUNK {
                return Err(Error::InvalidSetting {
                    name: "LADE_PUSH_CHUNK_SIZE".into(),
                    reason: format!(
                        "{text:?} is below the smallest chunk lade sends ({MIN_UPLOAD_CHUNK} \
                         bytes, one request each): give at least 64k, or 0 for one request \
                         per blob"
                    ),
                });
            }
            cfg.upload_chunk_size = (size > 0).then_some(size);
        }
        Ok(cfg)
    }

    /// Allows plain HTTP (and unverified TLS) for `registry` (`host[:port]`, or a URL).
    pub fn add_insecure_registry(&mut self, registry: &str) {
        let name =
            lade_cache::normalize_registry(registry).unwrap_or_else(|_| registry.to_string());
        if !self.insecure_registries.contains(&name) {
            self.insecure_registries.push(name);
        }
    }

    fn is_insecure(&self, name: &str, host: &str) -> bool {
        self.insecure_registries
            .iter()
            .any(|r| r == name || r == host)
    }

    /// Whether `registry` may be reached over plain HTTP: listed as insecure, or loopback.
    pub fn plain_http_allowed(&self, registry: &str) -> bool {
        let host = api_host(registry);
        self.is_insecure(registry, host) || is_loopback(host)
    }
}

/// An OCI distribution client. Cheap to clone (shared state: endpoints, credentials, tokens).
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: ClientConfig,
    registries: Mutex<HashMap<String, Arc<RegistryState>>>,
}

/// Smallest upload chunk [`Client`] falls back to when a registry keeps answering `413`; a
/// registry refusing even that is an error.
pub const MIN_UPLOAD_CHUNK: u64 = 64 << 10;

/// First chunk size after a `413` on a whole-blob upload when none is configured (halved while
/// the registry still refuses, never above half of what was refused).
const FALLBACK_UPLOAD_CHUNK: u64 = 8 << 20;

/// Parses `123`, `64k`, `5M`, `5MiB`, `1G`, `2GB` (binary multiples, case-insensitive).
pub fn parse_byte_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..split].parse().ok()?;
    let shift = match t[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// Per-registry state, created on first use.
pub(crate) struct RegistryState {
    /// As users write it: credentials key, error messages.
    pub name: String,
    /// Where the API is served.
    pub host: String,
    endpoint: tokio::sync::OnceCell<Endpoint>,
    auth: tokio::sync::Mutex<AuthState>,
    /// Upload chunk size a `413` taught (0: none yet); only ever lowered.
    learned_chunk: std::sync::atomic::AtomicU64,
}

impl RegistryState {
    /// The chunk size for uploads to this registry: what a `413` taught, else `configured`.
    pub(crate) fn upload_chunk(&self, configured: Option<u64>) -> Option<u64> {
        match self
            .learned_chunk
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => configured.filter(|c| *c > 0),
            n => Some(n),
        }
    }

    /// A request body of `refused` bytes was answered `413`: uploads go in chunks of at most
    /// half of it from now on. Returns the new chunk size, `None` when `refused` was already
    /// at most [`MIN_UPLOAD_CHUNK`] (smaller chunks are not worth a request each).
    pub(crate) fn shrink_chunk(&self, refused: u64, configured: Option<u64>) -> Option<u64> {
        if refused <= MIN_UPLOAD_CHUNK {
            return None;
        }
        let current = self
            .upload_chunk(configured)
            .unwrap_or(FALLBACK_UPLOAD_CHUNK);
        let next = current.min(refused / 2).max(MIN_UPLOAD_CHUNK);
        let mut set = next;
        let _ = self.learned_chunk.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |old| {
                // Another upload may have learned a smaller size meanwhile: keep the smaller.
                set = if old == 0 { next } else { old.min(next) };
                Some(set)
            },
        );
        Some(set)
    }
}

#[derive(Clone)]
pub(crate) struct Endpoint {
    /// `https://host/` or `http://host/`.
    pub base: Url,
    pub http: reqwest::Client,
    /// Credentials may go to an `http://` token realm (the registry is plain HTTP or loopback).
    plain_http_ok: bool,
}

/// A request body. `Bytes` can be sent again on retry; `Once` only once.
pub(crate) enum ReqBody {
    Empty,
    Bytes(Bytes),
    Once(Option<reqwest::Body>),
}

pub(crate) struct Req<'a> {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: ReqBody,
    pub scopes: &'a [Scope],
    /// Names the request in errors: "GET manifest localhost:5000/a:t".
    pub operation: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(config: ClientConfig) -> Client {
        Client {
            inner: Arc::new(Inner {
                config,
                registries: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Checks that `registry` (`host[:port]`, `docker.io`) answers the v2 API with the
    /// configured credentials, running the whole auth flow (what `lade login` verifies).
    pub async fn ping(&self, registry: &str) -> Result<()> {
        let reg = self.registry(registry);
        let ep = self.endpoint(&reg).await?;
        let url = join(&ep.base, "v2/")?;
        let resp = self
            .execute(
                &reg,
                Req {
                    method: Method::GET,
                    url,
                    headers: HeaderMap::new(),
                    body: ReqBody::Empty,
                    scopes: &[],
                    operation: "GET /v2/".into(),
                },
            )
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self
                .error_from(&reg, resp, "GET /v2/", ErrorContext::Other)
                .await)
        }
    }

    pub(crate) fn registry(&self, name: &str) -> Arc<RegistryState> {
        let mut map = self
            .inner
            .registries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(RegistryState {
                    name: name.to_string(),
                    host: api_host(name).to_string(),
                    endpoint: tokio::sync::OnceCell::new(),
                    auth: tokio::sync::Mutex::new(AuthState::default()),
                    learned_chunk: std::sync::atomic::AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// The registry's endpoint, discovered on first use by `GET /v2/` (HTTPS, then plain HTTP
    /// where allowed). The probe's 401 challenge tells how to authenticate.
    pub(crate) async fn endpoint(&self, reg: &RegistryState) -> Result<Endpoint> {
        reg.endpoint
            .get_or_try_init(|| self.discover(reg))
            .await
            .cloned()
    }

    async fn discover(&self, reg: &RegistryState) -> Result<Endpoint> {
        let cfg = &self.inner.config;
        let insecure = cfg.is_insecure(&reg.name, &reg.host);
        let loopback = is_loopback(&reg.host);
        let http = self.build_http(reg, insecure)?;
        let https_base = parse_url(&format!("https://{}/", reg.host), &reg.name)?;
        let http_base = parse_url(&format!("http://{}/", reg.host), &reg.name)?;
        let allow_http = insecure || loopback;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match http.get(join(&https_base, "v2/")?).send().await {
                Ok(resp) => return self.probed(reg, http, https_base, resp, loopback).await,
                Err(e) => e,
            };
            if allow_http {
                if let Ok(resp) = http.get(join(&http_base, "v2/")?).send().await {
                    let registry_like =
                        matches!(resp.status(), StatusCode::OK | StatusCode::UNAUTHORIZED)
                            || resp
                                .headers()
                                .contains_key("docker-distribution-api-version");
                    if registry_like {
                        return self.probed(reg, http, http_base, resp, true).await;
                    }
                }
            }
            let detail = error_chain(&err.without_url());
            if speaks_plain_http(&detail) && !allow_http {
                return Err(Error::Tls {
                    registry: reg.name.clone(),
                    detail: format!(
                        "{detail}; the registry seems to serve plain HTTP: if that is intended, allow it with --insecure-registry {}",
                        reg.name
                    ),
                });
            }
            if is_certificate_error(&detail) {
                let lower = detail.to_ascii_lowercase();
                // An alert from the server about a certificate concerns ours (the client's).
                let about_client_cert = lower.contains("fatal alert")
                    && (lower.contains("badcertificate") || lower.contains("certificaterequired"));
                let hint = if about_client_cert {
                    format!(
                        "the registry wants a client certificate: put client.cert and client.key in /etc/docker/certs.d/{}/",
                        reg.host
                    )
                } else {
                    format!(
                        "put the registry's CA certificate in /etc/docker/certs.d/{}/ca.crt, or allow it with --insecure-registry {}",
                        reg.host, reg.name
                    )
                };
                return Err(Error::Tls {
                    registry: reg.name.clone(),
                    detail: format!("{detail}; {hint}"),
                });
            }
            if attempt >= cfg.retry.max_attempts {
                return Err(Error::RetriesExhausted {
                    registry: reg.name.clone(),
                    operation: "GET /v2/".into(),
                    attempts: attempt,
                    last: detail,
                });
            }
            tokio::time::sleep(cfg.retry.delay(attempt, None)).await;
        }
    }

    async fn probed(
        &self,
        reg: &RegistryState,
        http: reqwest::Client,
        base: Url,
        resp: reqwest::Response,
        plain_http_ok: bool,
    ) -> Result<Endpoint> {
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            if let Some(c) =
                Challenge::from_headers(resp.headers().get_all(WWW_AUTHENTICATE).iter())
            {
                reg.auth.lock().await.challenge = Some(c);
            }
        } else if status == StatusCode::NOT_FOUND {
            return Err(Error::Protocol {
                registry: reg.name.clone(),
                operation: "GET /v2/".into(),
                reason: format!("no registry API at {base}v2/"),
            });
        }
        Ok(Endpoint {
            base,
            http,
            plain_http_ok,
        })
    }

    fn build_http(
        &self,
        reg: &RegistryState,
        accept_invalid_certs: bool,
    ) -> Result<reqwest::Client> {
        let cfg = &self.inner.config;
        let mut builder = reqwest::Client::builder()
            .user_agent(cfg.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .pool_idle_timeout(Duration::from_secs(60));
        let mut names = vec![reg.name.as_str()];
        if reg.host != reg.name {
            names.push(&reg.host);
        }
        let (roots, identity) = load_certs_d(&cfg.certs_dirs, &names, &reg.name)?;
        if !roots.is_empty() {
            builder = builder.tls_certs_merge(roots);
        }
        if let Some(identity) = identity {
            builder = builder.identity(identity);
        }
        if accept_invalid_certs {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        builder.build().map_err(|e| Error::Tls {
            registry: reg.name.clone(),
            detail: error_chain(&e),
        })
    }

    /// Sends `req` with authentication, following redirects (auth only to the registry's own
    /// origin), answering one 401 challenge, and retrying transient failures.
    pub(crate) async fn execute(
        &self,
        reg: &RegistryState,
        mut req: Req<'_>,
    ) -> Result<reqwest::Response> {
        let ep = self.endpoint(reg).await?;
        let policy = &self.inner.config.retry;
        let mut scopes = req.scopes.to_vec();
        let mut reauthenticated = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let body = match &mut req.body {
                ReqBody::Empty => None,
                ReqBody::Bytes(b) => Some(reqwest::Body::from(b.clone())),
                ReqBody::Once(b) => match b.take() {
                    Some(b) => Some(b),
                    None => {
                        return Err(Error::Protocol {
                            registry: reg.name.clone(),
                            operation: req.operation.clone(),
                            reason: "the request body was already sent".into(),
                        })
                    }
                },
            };
            let can_resend = !matches!(req.body, ReqBody::Once(_));
            let auth = self.authorization(reg, &ep, &scopes).await?;
            let sent = send_following_redirects(
                &ep,
                &req.method,
                req.url.clone(),
                &req.headers,
                body,
                auth,
            )
            .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    let detail = e.to_string();
                    if is_certificate_error(&detail) {
                        return Err(Error::Tls {
                            registry: reg.name.clone(),
                            detail,
                        });
                    }
                    if !can_resend || !e.retryable() {
                        return Err(Error::Transport {
                            registry: reg.name.clone(),
                            operation: req.operation.clone(),
                            detail,
                        });
                    }
                    if attempt >= policy.max_attempts {
                        return Err(Error::RetriesExhausted {
                            registry: reg.name.clone(),
                            operation: req.operation.clone(),
                            attempts: attempt,
                            last: detail,
                        });
                    }
                    tokio::time::sleep(policy.delay(attempt, None)).await;
                    continue;
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED {
                let challenge =
                    Challenge::from_headers(resp.headers().get_all(WWW_AUTHENTICATE).iter());
                if reauthenticated || !can_resend || challenge.is_none() {
                    return Err(self.unauthorized(reg, &req.operation, challenge).await);
                }
                reauthenticated = true;
                attempt -= 1;
                let mut st = reg.auth.lock().await;
                st.forget_token(&scopes);
                if let Some(Challenge::Bearer { scope, .. }) = &challenge {
                    for s in scope {
                        let s = Scope::raw(s);
                        if !scopes.contains(&s) {
                            scopes.push(s);
                        }
                    }
                }
                st.challenge = challenge;
                continue;
            }
            if is_transient_status(status) && can_resend {
                if attempt >= policy.max_attempts {
                    let last = self
                        .error_from(reg, resp, &req.operation, ErrorContext::Other)
                        .await
                        .to_string();
                    return Err(Error::RetriesExhausted {
                        registry: reg.name.clone(),
                        operation: req.operation.clone(),
                        attempts: attempt,
                        last,
                    });
                }
                let retry_after = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                drop(resp);
                tokio::time::sleep(policy.delay(attempt, retry_after)).await;
                continue;
            }
            return Ok(resp);
        }
    }

    /// The `Authorization` header for `scopes`, fetching a bearer token if needed.
    async fn authorization(
        &self,
        reg: &RegistryState,
        ep: &Endpoint,
        scopes: &[Scope],
    ) -> Result<Option<HeaderValue>> {
        let mut st = reg.auth.lock().await;
        if st.credential.is_none() {
            let cred = match self.inner.config.credential_overrides.get(&reg.name) {
                Some(c) => Some(c.clone()),
                None => self.inner.config.credentials.lookup(&reg.name).await?,
            };
            st.credential = Some(cred);
        }
        match &st.challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(st.basic_header()),
            Some(Challenge::Bearer { .. }) => {
                if let Some(t) = st.cached_token(scopes) {
                    return Ok(auth::bearer_header(&t));
                }
                let policy = &self.inner.config.retry;
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match auth::fetch_token(&ep.http, &mut st, &reg.name, scopes, ep.plain_http_ok)
                        .await
                    {
                        Ok(t) => return Ok(auth::bearer_header(&t)),
                        Err(e) if e.is_transient() && attempt < policy.max_attempts => {
                            tokio::time::sleep(policy.delay(attempt, None)).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    async fn unauthorized(
        &self,
        reg: &RegistryState,
        operation: &str,
        challenge: Option<Challenge>,
    ) -> Error {
        let st = reg.auth.lock().await;
        let insufficient = matches!(&challenge, Some(Challenge::Bearer { error: Some(e), .. }) if e == "insufficient_scope");
        match st.credential() {
            None if insufficient => Error::Denied {
                registry: reg.name.clone(),
                operation: operation.to_string(),
                detail: "anonymous access is not allowed".into(),
            },
            None => Error::AuthRequired {
                registry: reg.name.clone(),
            },
            Some(_) if insufficient => Error::Denied {
                registry: reg.name.clone(),
                operation: operation.to_string(),
                detail: "the credentials do not grant this access".into(),
            },
            Some(Credential::Basic { username, .. }) => Error::AuthFailed {
                registry: reg.name.clone(),
                detail: format!(
                    "the registry rejected user {username:?} (wrong user name or password?)"
                ),
            },
            Some(Credential::IdentityToken(_)) => Error::AuthFailed {
                registry: reg.name.clone(),
                detail: "the registry rejected the stored identity token".into(),
            },
        }
    }

    /// Turns an unsuccessful response into an error, reading the registry's error JSON.
    pub(crate) async fn error_from(
        &self,
        reg: &RegistryState,
        mut resp: reqwest::Response,
        operation: &str,
        context: ErrorContext<'_>,
    ) -> Error {
        let status = resp.status();
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_ERROR_BODY {
                break;
            }
        }
        #[derive(Deserialize)]
        struct Errors {
            #[serde(default)]
            errors: Vec<ErrorEntry>,
        }
        #[derive(Deserialize)]
        struct ErrorEntry {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let entries = serde_json::from_slice::<Errors>(&body)
            .map(|e| e.errors)
            .unwrap_or_default();
        let codes: Vec<&str> = entries.iter().map(|e| e.code.as_str()).collect();
        let message = if entries.is_empty() {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            entries
                .iter()
                .map(|e| {
                    let msg: String = e.message.chars().take(300).collect();
                    if e.code.is_empty() {
                        msg
                    } else {
                        format!("{}: {msg}", e.code)
                    }
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let not_found = status == StatusCode::NOT_FOUND
            || codes
                .iter()
                .any(|c| matches!(*c, "MANIFEST_UNKNOWN" | "BLOB_UNKNOWN" | "NAME_UNKNOWN"));
        match context {
            ErrorContext::Manifest(reference) if not_found => {
                return Error::ManifestNotFound {
                    reference: reference.to_string(),
                }
            }
            ErrorContext::Blob { repository, digest } if not_found => {
                return Error::BlobNotFound {
                    registry: reg.name.clone(),
                    repository: repository.to_string(),
                    digest: digest.clone(),
                }
            }
            _ => {}
        }
        if status == StatusCode::FORBIDDEN || codes.contains(&"DENIED") {
            return Error::Denied {
                registry: reg.name.clone(),
                operation: operation.to_string(),
                detail: message,
            };
        }
        if status == StatusCode::UNAUTHORIZED || codes.contains(&"UNAUTHORIZED") {
            return Error::AuthRequired {
                registry: reg.name.clone(),
            };
        }
        Error::Registry {
            registry: reg.name.clone(),
            operation: operation.to_string(),
            status: status.as_u16(),
            message,
        }
    }

    pub(crate) async fn pause(&self, attempt: u32) {
        tokio::time::sleep(self.inner.config.retry.delay(attempt, None)).await;
    }
}

/// What an error response is about, to name it well.
pub(crate) enum ErrorContext<'a> {
    Manifest(&'a crate::Reference),
    Blob {
        repository: &'a str,
        digest: &'a crate::Digest,
    },
    Other,
}

enum SendError {
    Http(reqwest::Error),
    Redirect(String),
}

impl SendError {
    fn retryable(&self) -> bool {
        match self {
            SendError::Http(e) => !e.is_builder() && !e.is_redirect() && !e.is_decode(),
            SendError::Redirect(_) => false,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Http(e) => f.write_str(&error_chain(e)),
            SendError::Redirect(s) => f.write_str(s),
        }
    }
}

async fn send_following_redirects(
    ep: &Endpoint,
    method: &Method,
    mut url: Url,
    headers: &HeaderMap,
    mut body: Option<reqwest::Body>,
    auth: Option<HeaderValue>,
) -> std::result::Result<reqwest::Response, SendError> {
    for _ in 0..=MAX_REDIRECTS {
        let mut rb = ep
            .http
            .request(method.clone(), url.clone())
            .headers(headers.clone());
        if same_origin(&url, &ep.base) {
            if let Some(a) = &auth {
                rb = rb.header(AUTHORIZATION, a.clone());
            }
        }
        if let Some(b) = body.take() {
            rb = rb.body(b);
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| SendError::Http(e.without_url()))?;
        let follow = resp.status().is_redirection()
            && resp.status() != StatusCode::NOT_MODIFIED
            && (*method == Method::GET || *method == Method::HEAD);
        if !follow {
            return Ok(resp);
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                SendError::Redirect(format!("redirect {} without Location", resp.status()))
            })?;
        let next = url
            .join(location)
            .map_err(|_| SendError::Redirect("redirect to an invalid URL".into()))?;
        if next.scheme() == "http" && url.scheme() == "https" && !ep.plain_http_ok {
            return Err(SendError::Redirect(format!(
                "refusing redirect from HTTPS to plain HTTP ({})",
                next.host_str().unwrap_or_default()
            )));
        }
        if !matches!(next.scheme(), "http" | "https") {
            return Err(SendError::Redirect("redirect to a non-HTTP URL".into()));
        }
        url = next;
    }
    Err(SendError::Redirect(format!(
        "more than {MAX_REDIRECTS} redirects"
    )))
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

fn is_transient_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// rustls's complaint when the server answered a TLS hello with plain HTTP.
fn speaks_plain_http(detail: &str) -> bool {
    detail.contains("InvalidContentType") || detail.contains("corrupt message")
}

fn is_certificate_error(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("certificate") || d.contains("unknownissuer")
}

/// `localhost`, `127.0.0.0/8` and `::1`, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The error's whole source chain ("error sending request: connection refused"), without URLs.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = s.source();
    }
    parts.join(": ")
}

fn parse_url(s: &str, registry: &str) -> Result<Url> {
    Url::parse(s).map_err(|_| Error::InvalidReference {
        reference: registry.to_string(),
        reason: "not a usable host".into(),
    })
}

pub(crate) fn join(base: &Url, path: &str) -> Result<Url> {
    base.join(path).map_err(|_| Error::InvalidReference {
        reference: path.to_string(),
        reason: "cannot form a URL".into(),
    })
}

/// Runs `tasks` on the runtime, at most `limit` (at least one) at a time, and returns their
/// outputs in input order. The first failure is returned and aborts the others (dropping the
/// set); a panicking task panics here; `cancelled` is the error of a task cancelled otherwise.
pub(crate) async fn run_bounded<T, F>(
    limit: usize,
    tasks: Vec<F>,
    cancelled: impl FnOnce() -> Error,
) -> Result<Vec<T>>
where
    F: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let count = tasks.len();
    for (i, task) in tasks.into_iter().enumerate() {
        let permits = permits.clone();
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            task.await.map(|out| (i, out))
        });
    }
    let mut done: Vec<Option<T>> = (0..count).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok((i, out))) => done[i] = Some(out),
            Ok(Err(e)) => return Err(e),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return Err(cancelled()),
        }
    }
    Ok(done.into_iter().flatten().collect())
}

/// Reads docker's `certs.d` convention for `names` (`host:port` spellings of one registry).
fn load_certs_d(
    dirs: &[PathBuf],
    names: &[&str],
    registry: &str,
) -> Result<(Vec<reqwest::Certificate>, Option<reqwest::Identity>)> {
    let tls = |path: &Path, detail: String| Error::Tls {
        registry: registry.to_string(),
        detail: format!("{}: {detail}", path.display()),
    };
    let mut roots = Vec::new();
    let mut identity = None;
    for dir in dirs {
        for name in names {
            let d = dir.join(name);
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            let mut files: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            files.sort();
            for f in &files {
                let ext = f.extension().and_then(|e| e.to_str()).unwrap_or_default();
                match ext {
                    "crt" => {
                        let pem = std::fs::read(f).map_err(|e| tls(f, e.to_string()))?;
                        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                            tls(f, format!("not a PEM certificate: {}", error_chain(&e)))
                        })?;
                        if certs.is_empty() {
                            return Err(tls(f, "no PEM certificate in the file".into()));
                        }
                        roots.extend(certs);
                    }
                    "cert" => {
                        let key = f.with_extension("key");
                        if !key.exists() {
                            return Err(tls(
                                f,
                                format!("client certificate without its key {}", key.display()),
                            ));
                        }
                        let mut pem = std::fs::read(f).map_err(|e| tls(f, e.to_string()))?;
                        pem.push(b'\n');
                        pem.extend(std::fs::read(&key).map_err(|e| tls(&key, e.to_string()))?);
                        identity = Some(reqwest::Identity::from_pem(&pem).map_err(|e| {
                            tls(
                                f,
                                format!("bad client certificate/key: {}", error_chain(&e)),
                            )
                        })?);
                    }
                    "key" if !f.with_extension("cert").exists() => {
                        return Err(tls(f, "client key without its certificate (.cert)".into()));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok((roots, identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.1.2.3:443",
            "[::1]:5000",
            "[::1]",
            "LOCALHOST:1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:5000",
            "128.0.0.1",
            "[::2]:5000",
            "localhost.example.com",
            "docker.io",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn classifies_tls_failures() {
        let plain = "error sending request: client error (Connect): received corrupt message of type InvalidContentType";
        assert!(speaks_plain_http(plain) && !is_certificate_error(plain));
        let ca = "client error (Connect): invalid peer certificate: UnknownIssuer";
        assert!(is_certificate_error(ca) && !speaks_plain_http(ca));
        assert!(!is_certificate_error(
            "tcp connect error: Connection refused"
        ));
    }

    #[test]
    fn plain_http_only_when_allowed() {
        let mut cfg = ClientConfig::default();
        assert!(cfg.plain_http_allowed("localhost:5000"));
        assert!(cfg.plain_http_allowed("127.0.0.1:5000"));
        assert!(cfg.plain_http_allowed("[::1]:5000"));
        assert!(!cfg.plain_http_allowed("reg.example:5000"));
        assert!(!cfg.plain_http_allowed("docker.io"));
        assert!(!cfg.plain_http_allowed("10.1.2.3:5000"));
        cfg.add_insecure_registry("http://reg.example:5000/");
        cfg.add_insecure_registry("reg.example:5000");
        assert_eq!(cfg.insecure_registries, ["reg.example:5000"]);
        assert!(cfg.plain_http_allowed("reg.example:5000"));
        assert!(
            !cfg.plain_http_allowed("reg.example"),
            "the port is part of the name"
        );
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("5242880"), Some(5 << 20));
        assert_eq!(parse_byte_size("64k"), Some(64 << 10));
        assert_eq!(parse_byte_size("5M"), Some(5 << 20));
        assert_eq!(parse_byte_size(" 5MiB "), Some(5 << 20));
        assert_eq!(parse_byte_size("1gb"), Some(1 << 30));
        assert_eq!(parse_byte_size("0"), Some(0));
        for bad in [
            "",
            "M",
            "5X",
            "-1",
            "1.5M",
            "5 MB extra",
            "99999999999999999999G",
        ] {
            assert_eq!(parse_byte_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn chunk_size_shrinks_after_413_down_to_a_floor() {
        let client = Client::new(ClientConfig::default());
        let reg = client.registry("reg.example");
        assert_eq!(reg.upload_chunk(None), None);
        assert_eq!(reg.upload_chunk(Some(0)), None);
        assert_eq!(reg.upload_chunk(Some(3 << 20)), Some(3 << 20));
        // A whole 100 MiB blob refused: the fallback chunk size.
        assert_eq!(reg.shrink_chunk(100 << 20, None), Some(8 << 20));
        assert_eq!(reg.upload_chunk(None), Some(8 << 20));
        assert_eq!(reg.upload_chunk(Some(16 << 20)), Some(8 << 20));
        // Then halved per refused chunk; never raised by a larger refusal.
        assert_eq!(reg.shrink_chunk(8 << 20, None), Some(4 << 20));
        assert_eq!(reg.shrink_chunk(100 << 20, None), Some(4 << 20));
        // A small refused blob: half of it.
        let other = client.registry("other.example");
        assert_eq!(other.shrink_chunk(1 << 20, Some(4 << 20)), Some(512 << 10));
        assert_eq!(
            other.shrink_chunk(100 << 10, None),
            Some(MIN_UPLOAD_CHUNK),
            "never below the floor"
        );
        assert_eq!(other.shrink_chunk(MIN_UPLOAD_CHUNK, None), None);
    }

    #[test]
    fn backoff_doubles_and_respects_retry_after() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        assert_eq!(p.delay(1, None), Duration::from_millis(100));
        assert_eq!(p.delay(2, None), Duration::from_millis(200));
        assert_eq!(p.delay(4, None), Duration::from_millis(800));
        assert_eq!(p.delay(9, None), Duration::from_secs(2), "capped");
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(2),
            "Retry-After capped"
        );
        assert_eq!(p.delay(u32::MAX, None), Duration::from_secs(2));
    }

    #[test]
    fn origins() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(same_origin(&u("https://r:443/v2/x"), &u("https://r/")));
        assert!(!same_origin(&u("https://storage/x"), &u("https://r/")));
        assert!(!same_origin(&u("http://r/x"), &u("https://r/")));
        assert!(!same_origin(&u("https://r:5000/x"), &u("https://r/")));
    }

    #[test]
    fn certs_d_layout() {
        let dir = tempfile::tempdir().unwrap();
        let reg = dir.path().join("reg.example:5000");
        std::fs::create_dir_all(&reg).unwrap();
        // no directory for the registry: nothing loaded
        let (roots, id) =
            load_certs_d(&[dir.path().to_path_buf()], &["other:1"], "other:1").unwrap();
        assert!(roots.is_empty() && id.is_none());
        std::fs::write(reg.join("ca.crt"), "not pem").unwrap();
        let err = load_certs_d(
            &[dir.path().to_path_buf()],
            &["reg.example:5000"],
            "reg.example:5000",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ca.crt"), "{err}");
        std::fs::remove_file(reg.join("ca.crt")).unwrap();
        std::fs::write(reg.join("client.key"), "x").unwrap();
        let err = load_certs_d(
            &[dir.path().to_path_buf()],
            &["reg.example:5000"],
            "reg.example:5000",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("without its certificate"), "{err}");
    }
}
