//! Registry authentication: `WWW-Authenticate` challenges, the bearer-token flow and the
//! per-registry token cache.
//!
//! A registry answers 401 with `Basic realm=...` or `Bearer realm=...,service=...,scope=...`.
//! For Basic, the stored credentials go on every request. For Bearer, a token is fetched from
//! the realm (`GET ?service=&scope=` with Basic credentials when we have some, or `POST` with
//! `grant_type=refresh_token` for an identity token), cached per set of scopes until shortly
//! before it expires, and sent as `Authorization: Bearer`. Tokens and passwords are never put
//! into errors.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use reqwest::header::HeaderValue;
use reqwest::Url;
use serde::Deserialize;

use crate::credentials::Credential;
use crate::error::{Error, Result};

/// Largest token response accepted.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;
/// Tokens are renewed this long before they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(15);
/// A token without `expires_in` lives 60 s (the distribution spec's default).
const DEFAULT_TOKEN_LIFETIME: u64 = 60;

/// An access scope: `repository:<name>:<actions>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(String);

impl Scope {
    pub fn pull(repository: &str) -> Scope {
        Scope(format!("repository:{repository}:pull"))
    }

    pub fn push(repository: &str) -> Scope {
        Scope(format!("repository:{repository}:pull,push"))
    }

    /// A scope as a registry wrote it in a challenge.
    pub fn raw(s: &str) -> Scope {
        Scope(s.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        /// Scopes the registry asked for in this challenge (space-separated in the header).
        scope: Vec<String>,
        /// `error="insufficient_scope"` and the like.
        error: Option<String>,
    },
}

impl Challenge {
    /// Picks the best challenge among the response's `WWW-Authenticate` values (Bearer first).
    pub fn from_headers<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Option<Challenge> {
        let mut basic = None;
        for v in values {
            let Ok(text) = v.to_str() else { continue };
            for c in parse_challenges(text) {
                match c {
                    Challenge::Bearer { .. } => return Some(c),
                    Challenge::Basic => basic = Some(c),
                }
            }
        }
        basic
    }
}

/// Parses one header value; it may hold several comma-separated challenges.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut scheme: Option<String> = None;
    let mut params: HashMap<String, String> = HashMap::new();
    let finish =
        |scheme: Option<String>, params: &mut HashMap<String, String>, out: &mut Vec<_>| {
            match scheme.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("basic") => out.push(Challenge::Basic),
                Some("bearer") => {
                    if let Some(realm) = params.remove("realm") {
                        out.push(Challenge::Bearer {
                            realm,
                            service: params.remove("service"),
                            scope: params
                                .remove("scope")
                                .map(|s| {
                                    s.split(' ')
                                        .filter(|x| !x.is_empty())
                                        .map(String::from)
                                        .collect()
                                })
                                .unwrap_or_default(),
                            error: params.remove("error"),
                        });
                    }
                }
                _ => {}
            }
            params.clear();
        };
    let b = header.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && !matches!(b[i], b' ' | b'\t' | b',' | b'=') {
            i += 1;
        }
        let token = &header[start..i];
        let mut j = i;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' {
            // key=value
            i = j + 1;
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            let mut value = String::new();
            if i < b.len() && b[i] == b'"' {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    let ch_len = header[i..].chars().next().map_or(1, char::len_utf8);
                    value.push_str(&header[i..i + ch_len]);
                    i += ch_len;
                }
                i += 1; // closing quote
            } else {
                let vs = i;
                while i < b.len() && b[i] != b',' && b[i] != b' ' {
                    i += 1;
                }
                value.push_str(&header[vs..i]);
            }
            if scheme.is_some() {
                params.insert(token.to_ascii_lowercase(), value);
            }
        } else {
            // a new auth scheme
            finish(scheme.take(), &mut params, &mut out);
            scheme = Some(token.to_string());
        }
    }
    finish(scheme, &mut params, &mut out);
    out
}

#[derive(Debug, Clone)]
struct CachedToken {
    value: String,
    expires: Instant,
}

/// What we know about one registry's authentication.
#[derive(Debug, Default)]
pub(crate) struct AuthState {
    /// Looked up once per client: `None` = not yet, `Some(None)` = anonymous.
    pub credential: Option<Option<Credential>>,
    pub challenge: Option<Challenge>,
    tokens: HashMap<String, CachedToken>,
}

fn scope_key(scopes: &[Scope]) -> String {
    let mut v: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
    v.sort_unstable();
    v.dedup();
    v.join(" ")
}

impl AuthState {
    pub fn credential(&self) -> Option<&Credential> {
        self.credential.as_ref().and_then(Option::as_ref)
    }

    pub fn cached_token(&self, scopes: &[Scope]) -> Option<String> {
        let t = self.tokens.get(&scope_key(scopes))?;
        (Instant::now() + EXPIRY_MARGIN < t.expires).then(|| t.value.clone())
    }

    pub fn forget_token(&mut self, scopes: &[Scope]) {
        self.tokens.remove(&scope_key(scopes));
    }

    fn store_token(&mut self, scopes: &[Scope], value: String, lifetime: Duration) {
        self.tokens.insert(
            scope_key(scopes),
            CachedToken {
                value,
                expires: Instant::now() + lifetime,
            },
        );
    }

    /// `Authorization: Basic` for the stored credentials, if they are a user and password.
    pub fn basic_header(&self) -> Option<HeaderValue> {
        match self.credential()? {
            Credential::Basic { username, password } => basic_header(username, password),
            Credential::IdentityToken(_) => None,
        }
    }
}

fn basic_header(username: &str, password: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!(
        "Basic {}",
        BASE64.encode(format!("{username}:{password}"))
    ))
    .ok()?;
    v.set_sensitive(true);
    Some(v)
}

pub(crate) fn bearer_header(token: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Fetches a token for `scopes` from the challenge's realm and caches it. `registry` names the
/// registry in errors; `allow_plain_http_realm` permits sending credentials to an `http://`
/// realm (the registry itself is plain HTTP or on loopback).
pub(crate) async fn fetch_token(
    http: &reqwest::Client,
    state: &mut AuthState,
    registry: &str,
    scopes: &[Scope],
    allow_plain_http_realm: bool,
) -> Result<String> {
    let Some(Challenge::Bearer { realm, service, .. }) = state.challenge.clone() else {
        return Err(Error::Protocol {
            registry: registry.to_string(),
            operation: "authentication".into(),
            reason: "no bearer challenge to answer".into(),
        });
    };
    let protocol = |reason: String| Error::Protocol {
        registry: registry.to_string(),
        operation: "token request".into(),
        reason,
    };
    let mut url =
        Url::parse(&realm).map_err(|_| protocol(format!("invalid token realm {realm:?}")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(protocol(format!(
            "token realm {realm:?} is not an http(s) URL"
        )));
    }
    let credential = state.credential().cloned();
    if url.scheme() == "http" && credential.is_some() && !allow_plain_http_realm {
        return Err(protocol(format!(
            "refusing to send credentials to plain-HTTP token realm {realm}"
        )));
    }
    let request = match &credential {
        Some(Credential::IdentityToken(refresh)) => {
            let mut form: Vec<(&str, &str)> = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("client_id", "lade"),
            ];
            if let Some(s) = &service {
                form.push(("service", s));
            }
            let joined = scopes
                .iter()
                .map(Scope::as_str)
                .collect::<Vec<_>>()
                .join(" ");
            if !joined.is_empty() {
                form.push(("scope", &joined));
            }
            let body = form
                .iter()
                .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
                .collect::<Vec<_>>()
                .join("&");
            http.post(url.clone())
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
        }
        other => {
            {
                let mut q = url.query_pairs_mut();
                if let Some(s) = &service {
                    q.append_pair("service", s);
                }
                for s in scopes {
                    q.append_pair("scope", s.as_str());
                }
                q.append_pair("client_id", "lade");
            }
            let mut req = http.get(url.clone());
            if let Some(Credential::Basic { username, password }) = other {
                if let Some(h) = basic_header(username, password) {
                    req = req.header(reqwest::header::AUTHORIZATION, h);
                }
            }
            req
        }
    };
    let host = url.host_str().unwrap_or_default().to_string();
    let mut resp = request.send().await.map_err(|e| Error::Transport {
        registry: registry.to_string(),
        operation: format!("token request to {host}"),
        detail: crate::client::error_chain(&e.without_url()),
    })?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(match &credential {
            None => Error::AuthRequired {
                registry: registry.to_string(),
            },
            Some(Credential::Basic { username, .. }) => Error::AuthFailed {
                registry: registry.to_string(),
                detail: format!("the token server {host} rejected user {username:?} (wrong user name or password?)"),
            },
            Some(Credential::IdentityToken(_)) => Error::AuthFailed {
                registry: registry.to_string(),
                detail: format!("the token server {host} rejected the stored identity token"),
            },
        });
    }
    if !status.is_success() {
        return Err(Error::Registry {
            registry: registry.to_string(),
            operation: format!("token request to {host}"),
            status: status.as_u16(),
            message: status.canonical_reason().unwrap_or("error").to_string(),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Error::Transport {
        registry: registry.to_string(),
        operation: format!("token request to {host}"),
        detail: crate::client::error_chain(&e.without_url()),
    })? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > MAX_TOKEN_RESPONSE {
            return Err(protocol("token response larger than 1 MiB".into()));
        }
    }
    let parsed: TokenResponse =
        serde_json::from_slice(&body).map_err(|_| protocol("token response is not JSON".into()))?;
    let token = parsed
        .token
        .filter(|t| !t.is_empty())
        .or(parsed.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| protocol("token response has neither `token` nor `access_token`".into()))?;
    let lifetime = Duration::from_secs(
        parsed
            .expires_in
            .unwrap_or(DEFAULT_TOKEN_LIFETIME)
            .max(DEFAULT_TOKEN_LIFETIME),
    );
    state.store_token(scopes, token.clone(), lifetime);
    Ok(token)
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_challenge() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            c,
            vec![Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: vec!["repository:library/busybox:pull".into()],
                error: None,
            }]
        );
    }

    #[test]
    fn parses_odd_spellings() {
        assert_eq!(
            parse_challenges(r#"Basic realm="Registry Realm""#),
            vec![Challenge::Basic]
        );
        assert_eq!(parse_challenges("basic"), vec![Challenge::Basic]);
        let c = parse_challenges(
            r#"bearer  realm = "http://a/t\"x" , service=svc, scope="a:b:pull c:d:push",error="insufficient_scope""#,
        );
        assert_eq!(
            c,
            vec![Challenge::Bearer {
                realm: "http://a/t\"x".into(),
                service: Some("svc".into()),
                scope: vec!["a:b:pull".into(), "c:d:push".into()],
                error: Some("insufficient_scope".into()),
            }]
        );
        let two = parse_challenges(r#"Basic realm="x", Bearer realm="https://t",service="s""#);
        assert_eq!(two.len(), 2);
        let hv = [
            HeaderValue::from_static(r#"Basic realm="x""#),
            HeaderValue::from_static(r#"Bearer realm="https://t""#),
        ];
        assert!(matches!(
            Challenge::from_headers(hv.iter()),
            Some(Challenge::Bearer { .. })
        ));
        // A bearer challenge without a realm is unusable.
        assert_eq!(parse_challenges(r#"Bearer service="s""#), vec![]);
        for junk in [
            "",
            "=",
            "\"",
            "Bearer realm=\"unterminated",
            ",,,",
            "a=b=c",
            "Négociation",
        ] {
            let _ = parse_challenges(junk);
        }
    }

    #[test]
    fn token_cache_is_per_scope_set_and_expires() {
        let mut s = AuthState::default();
        let pull = [Scope::pull("a")];
        let push = [Scope::push("b"), Scope::pull("a")];
        s.store_token(&pull, "t1".into(), Duration::from_secs(300));
        s.store_token(&push, "t2".into(), Duration::from_secs(300));
        assert_eq!(s.cached_token(&pull).as_deref(), Some("t1"));
        assert_eq!(
            s.cached_token(&[Scope::pull("a"), Scope::push("b")])
                .as_deref(),
            Some("t2"),
            "order of scopes does not matter"
        );
        assert_eq!(s.cached_token(&[Scope::push("a")]), None);
        s.store_token(&pull, "old".into(), Duration::from_secs(5));
        assert_eq!(
            s.cached_token(&pull),
            None,
            "a token about to expire is not used"
        );
        s.forget_token(&push);
        assert_eq!(s.cached_token(&push), None);
    }

    #[test]
    fn headers_are_sensitive() {
        let mut s = AuthState {
            credential: Some(Some(Credential::basic("u", "p"))),
            ..AuthState::default()
        };
        let h = s.basic_header().unwrap();
        assert!(h.is_sensitive());
        assert_eq!(h.to_str().unwrap(), "Basic dTpw");
        assert!(bearer_header("tok").unwrap().is_sensitive());
        s.credential = Some(Some(Credential::IdentityToken("x".into())));
        assert!(s.basic_header().is_none());
        assert_eq!(urlencode("a b/c"), "a%20b%2Fc");
    }
}
