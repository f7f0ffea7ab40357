//! Registry credentials: Lade's own auth file (written by `lade login`) and docker's
//! `config.json` (`auths`, `credsStore`, `credHelpers`).
//!
//! Lade's file uses docker's `auths` format (`{"auths": {"host": {"auth": base64(user:pass)}}}`),
//! mode 0600, so docker tooling pointed at it can read it. Lookup order for a registry: Lade's
//! file, then docker's credential helper for it (`credHelpers`, else `credsStore`), then docker's
//! `auths`. A helper that is not installed, fails, or does not answer within the timeout is an
//! error for the registries it serves (as with docker: `error getting credentials`), never a
//! silent fall back to anonymous access; other registries are not affected. Secrets never
//! appear in `Debug` output or errors.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::hub::{DOCKER_HUB, DOCKER_HUB_AUTH_KEY};
use lade_cache::normalize_registry;

/// Limit on what a config file or helper may hand us.
const MAX_CONFIG_FILE: u64 = 4 << 20;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A user name and password (or personal access token).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (`identitytoken` in docker's config), exchanged at the token
    /// endpoint with `grant_type=refresh_token`.
    IdentityToken(String),
}

impl Credential {
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Credential {
        Credential::Basic {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// Where credentials are read from and written to.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    lade_auth_file: Option<PathBuf>,
    docker_config_file: Option<PathBuf>,
    helper_timeout: Duration,
    helper_dir: Option<PathBuf>,
}

impl Default for CredentialStore {
    /// No files: anonymous access only.
    fn default() -> CredentialStore {
        CredentialStore {
            lade_auth_file: None,
            docker_config_file: None,
            helper_timeout: Duration::from_secs(30),
            helper_dir: None,
        }
    }
}

impl CredentialStore {
    /// The files the environment names: Lade's `$LADE_CONFIG/auth.json`, else
    /// `$XDG_CONFIG_HOME/lade/auth.json`, else `~/.config/lade/auth.json`; docker's
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn from_env() -> CredentialStore {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = var("HOME");
        let lade_dir = var("LADE_CONFIG")
            .or_else(|| var("XDG_CONFIG_HOME").map(|x| x.join("lade")))
            .or_else(|| home.as_ref().map(|h| h.join(".config/lade")));
        let docker_dir = var("DOCKER_CONFIG").or_else(|| home.as_ref().map(|h| h.join(".docker")));
        CredentialStore {
            lade_auth_file: lade_dir.map(|d| d.join("auth.json")),
            docker_config_file: docker_dir.map(|d| d.join("config.json")),
            ..CredentialStore::default()
        }
    }

    /// Explicit files (either may be absent).
    pub fn new(lade_auth_file: Option<PathBuf>, docker_config_file: Option<PathBuf>) -> Self {
        CredentialStore {
            lade_auth_file,
            docker_config_file,
            ..CredentialStore::default()
        }
    }

    /// How long a `docker-credential-*` helper may take (default 30 s).
    pub fn with_helper_timeout(mut self, timeout: Duration) -> Self {
        self.helper_timeout = timeout;
        self
    }

    /// Looks for `docker-credential-*` helpers in `dir` before `PATH` (tests, odd installs).
    pub fn with_helper_dir(mut self, dir: PathBuf) -> Self {
        self.helper_dir = Some(dir);
        self
    }

    /// Lade's auth file (`lade login` writes here).
    pub fn lade_auth_file(&self) -> Option<&Path> {
        self.lade_auth_file.as_deref()
    }

    pub fn docker_config_file(&self) -> Option<&Path> {
        self.docker_config_file.as_deref()
    }

    /// Credentials for `registry` (as in [`crate::Reference::registry`]), if any are configured.
    pub async fn lookup(&self, registry: &str) -> Result<Option<Credential>> {
        if let Some(path) = &self.lade_auth_file {
            if let Some(cfg) = read_config(path)? {
                if let Some(c) = cfg.auths_entry(path, registry)? {
                    return Ok(Some(c));
                }
            }
        }
        if let Some(path) = &self.docker_config_file {
            if let Some(cfg) = read_config(path)? {
                let helper = cfg
                    .cred_helpers
                    .iter()
                    .find(|(k, _)| normalize_registry(k).ok().as_deref() == Some(registry))
                    .map(|(k, v)| (v.clone(), format!("credHelpers[{k:?}]")))
                    .or_else(|| {
                        cfg.creds_store
                            .clone()
                            .map(|h| (h, "credsStore".to_string()))
                    })
                    .filter(|(h, _)| !h.is_empty());
                if let Some((helper, named_by)) = helper {
                    if let Some(c) = run_helper(
                        &helper,
                        registry,
                        self.helper_timeout,
                        self.helper_dir.as_deref(),
                        &format!("{named_by} in {}", path.display()),
                    )
                    .await?
                    {
                        return Ok(Some(c));
                    }
                }
                return cfg.auths_entry(path, registry);
            }
        }
        Ok(None)
    }

    /// Stores `username`/`password` for `registry` in Lade's auth file (created 0600, replaced
    /// atomically, other entries kept). Returns the file written.
    pub fn save(&self, registry: &str, username: &str, password: &str) -> Result<PathBuf> {
        let path = self.writable_file()?;
        let mut doc = read_json_object(&path)?;
        let auths = auths_object(&mut doc, &path)?;
        auths.retain(|k, _| normalize_registry(k).ok().as_deref() != Some(registry));
        auths.insert(
            auth_key(registry).to_string(),
            serde_json::json!({ "auth": BASE64.encode(format!("{username}:{password}")) }),
        );
        write_private(&path, &doc)?;
        Ok(path)
    }

    /// Removes `registry` from Lade's auth file. Returns whether an entry was there.
    pub fn remove(&self, registry: &str) -> Result<bool> {
        let path = self.writable_file()?;
        if !path.exists() {
            return Ok(false);
        }
        let mut doc = read_json_object(&path)?;
        let auths = auths_object(&mut doc, &path)?;
        let before = auths.len();
        auths.retain(|k, _| normalize_registry(k).ok().as_deref() != Some(registry));
        if auths.len() == before {
            return Ok(false);
        }
        write_private(&path, &doc)?;
        Ok(true)
    }

    fn writable_file(&self) -> Result<PathBuf> {
        self.lade_auth_file.clone().ok_or_else(|| Error::Config {
            path: PathBuf::from("auth.json"),
            reason: "no config directory: set LADE_CONFIG or HOME".into(),
        })
    }
}

/// docker's key for a registry in `auths`.
fn auth_key(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_AUTH_KEY
    } else {
        registry
    }
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(rename = "credsStore", default)]
    creds_store: Option<String>,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(rename = "identitytoken", default)]
    identity_token: Option<String>,
}

impl ConfigFile {
    fn auths_entry(&self, path: &Path, registry: &str) -> Result<Option<Credential>> {
        let Some((key, entry)) = self
            .auths
            .iter()
            .find(|(k, _)| normalize_registry(k).ok().as_deref() == Some(registry))
        else {
            return Ok(None);
        };
        if let Some(token) = entry.identity_token.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken(token.clone())));
        }
        if let Some(auth) = entry.auth.as_ref().filter(|a| !a.is_empty()) {
            let bad = || Error::Config {
                path: path.to_path_buf(),
                reason: format!("auths[{key:?}].auth is not base64 of user:password"),
            };
            let decoded = BASE64.decode(auth.trim()).map_err(|_| bad())?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
            let (u, p) = decoded.split_once(':').ok_or_else(bad)?;
            return Ok(Some(Credential::basic(u, p)));
        }
        match (&entry.username, &entry.password) {
            (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credential::basic(u, p))),
            _ => Ok(None),
        }
    }
}

fn read_limited(path: &Path) -> Result<Option<Vec<u8>>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let buf = lade_cache::digest::read_at_most(file, MAX_CONFIG_FILE)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
        .ok_or_else(|| Error::Config {
            path: path.to_path_buf(),
            reason: format!("larger than {MAX_CONFIG_FILE} bytes"),
        })?;
    Ok(Some(buf))
}

fn read_config(path: &Path) -> Result<Option<ConfigFile>> {
    let Some(bytes) = read_limited(path)? else {
        return Ok(None);
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(ConfigFile::default()));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Config {
            path: path.to_path_buf(),
            reason: format!("invalid JSON: {e}"),
        })
}

fn read_json_object(path: &Path) -> Result<serde_json::Value> {
    match read_limited(path)? {
        None => Ok(serde_json::json!({})),
        Some(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(serde_json::json!({})),
        Some(b) => {
            let v: serde_json::Value = serde_json::from_slice(&b).map_err(|e| Error::Config {
                path: path.to_path_buf(),
                reason: format!("invalid JSON: {e}"),
            })?;
            if v.is_object() {
                Ok(v)
            } else {
                Err(Error::Config {
                    path: path.to_path_buf(),
                    reason: "not a JSON object".into(),
                })
            }
        }
    }
}

fn auths_object<'a>(
    doc: &'a mut serde_json::Value,
    path: &Path,
) -> Result<&'a mut serde_json::Map<String, serde_json::Value>> {
    let bad = || Error::Config {
        path: path.to_path_buf(),
        reason: "`auths` is not an object".into(),
    };
    let obj = doc.as_object_mut().ok_or_else(bad)?;
    obj.entry("auths")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .ok_or_else(bad)
}

/// Writes `doc` to `path` through a 0600 temp file in the same directory and a rename.
fn write_private(path: &Path, doc: &serde_json::Value) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let ctx = |what: &str| format!("{what} {}", path.display());
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(ctx("creating the directory of"), e))?;
    let mut bytes = serde_json::to_vec_pretty(doc).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("auth.json"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(ctx("writing"), e));
    }
    Ok(())
}

/// Runs `docker-credential-<helper> get` with the registry's server URL on stdin. `named_by`
/// says where the helper was configured (`credsStore in FILE`), for the error when it is not
/// installed.
async fn run_helper(
    helper: &str,
    registry: &str,
    timeout: Duration,
    helper_dir: Option<&Path>,
    named_by: &str,
) -> Result<Option<Credential>> {
    let err = |detail: String| Error::CredentialHelper {
        helper: helper.to_string(),
        detail,
    };
    if !helper
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(err("invalid helper name in docker's config".into()));
    }
    let program = format!("docker-credential-{helper}");
    let exe = helper_dir
        .map(|d| d.join(&program))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(&program));
    let mut child = match tokio::process::Command::new(&exe)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // docker: `error getting credentials - err: exec: "docker-credential-x":
            // executable file not found in $PATH`. Going on without credentials would turn
            // into a confusing 401 (or a push to the wrong account) later.
            return Err(err(format!(
                "error getting credentials for {registry}: {program:?} is not installed \
                 (executable file not found in $PATH); it is named by {named_by}: install it, \
                 or remove that entry and run `lade login {registry}`"
            )));
        }
        Err(e) => return Err(err(format!("cannot start {program}: {e}"))),
    };
    let server = auth_key(registry).to_string();
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading its input (an error it reports on stderr)
            // closes the pipe: its exit status and message below are what matter, not EPIPE.
            let written = match stdin.write_all(server.as_bytes()).await {
                Ok(()) => stdin.shutdown().await,
                Err(e) => Err(e),
            };
            match written {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e),
                _ => {}
            }
        }
        let mut out = Vec::new();
        let mut errout = Vec::new();
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let (a, b) = tokio::join!(
            async {
                match &mut stdout {
                    Some(s) => s
                        .take(MAX_CONFIG_FILE)
                        .read_to_end(&mut out)
                        .await
                        .map(|_| ()),
                    None => Ok(()),
                }
            },
            async {
                match &mut stderr {
                    Some(s) => s.take(64 << 10).read_to_end(&mut errout).await.map(|_| ()),
                    None => Ok(()),
                }
            }
        );
        a?;
        b?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, out, errout))
    };
    let (status, out, errout) = match tokio::time::timeout(timeout, run).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(err(format!("talking to {program}: {e}"))),
        Err(_) => {
            return Err(err(format!(
                "no answer within {}s for {registry}",
                timeout.as_secs()
            )))
        }
    };
    let text = String::from_utf8_lossy(&out);
    if !status.success() {
        let msg = format!(
            "{} {}",
            text.trim(),
            String::from_utf8_lossy(&errout).trim()
        );
        if msg.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        // The helper's own words; helpers do not echo secrets on failure.
        return Err(err(format!("get for {registry} failed: {}", msg.trim())));
    }
    #[derive(Deserialize)]
    struct HelperOut {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let parsed: HelperOut = serde_json::from_slice(&out)
        .map_err(|_| err("answered something that is not JSON".into()))?;
    if parsed.secret.is_empty() {
        return Ok(None);
    }
    if parsed.username == "<token>" {
        return Ok(Some(Credential::IdentityToken(parsed.secret)));
    }
    Ok(Some(Credential::basic(parsed.username, parsed.secret)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[tokio::test]
    async fn reads_docker_auths_in_every_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("docker/config.json");
        write(
            &docker,
            &serde_json::json!({"auths": {
                "https://index.docker.io/v1/": {"auth": BASE64.encode("hub:pw:with:colons")},
                "https://reg.example:5000/v2/": {"username": "u2", "password": "p2"},
                "tok.example": {"identitytoken": "refresh"},
                "empty.example": {},
            }})
            .to_string(),
        );
        let store = CredentialStore::new(Some(dir.path().join("lade/auth.json")), Some(docker));
        assert_eq!(
            store.lookup("docker.io").await.unwrap(),
            Some(Credential::basic("hub", "pw:with:colons"))
        );
        assert_eq!(
            store.lookup("reg.example:5000").await.unwrap(),
            Some(Credential::basic("u2", "p2"))
        );
        assert_eq!(
            store.lookup("tok.example").await.unwrap(),
            Some(Credential::IdentityToken("refresh".into()))
        );
        assert_eq!(store.lookup("empty.example").await.unwrap(), None);
        assert_eq!(store.lookup("other.example").await.unwrap(), None);
    }

    #[tokio::test]
    async fn lade_file_wins_and_save_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("docker/config.json");
        write(
            &docker,
            &serde_json::json!({"auths": {"localhost:5000": {"auth": BASE64.encode("d:d")}}})
                .to_string(),
        );
        let lade = dir.path().join("lade/auth.json");
        write(
            &lade,
            r#"{"auths": {"keep.example": {"auth": "a2VlcDprZWVw"}}, "other": 1}"#,
        );
        let store = CredentialStore::new(Some(lade.clone()), Some(docker));
        assert_eq!(
            store.lookup("localhost:5000").await.unwrap(),
            Some(Credential::basic("d", "d"))
        );
        assert_eq!(store.save("localhost:5000", "me", "secret").unwrap(), lade);
        assert_eq!(
            store.lookup("localhost:5000").await.unwrap(),
            Some(Credential::basic("me", "secret"))
        );
        let mode = std::fs::metadata(&lade).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&lade).unwrap()).unwrap();
        assert_eq!(doc["other"], 1, "unknown fields are kept");
        assert_eq!(
            doc["auths"]["localhost:5000"]["auth"],
            BASE64.encode("me:secret")
        );
        assert_eq!(
            store.lookup("keep.example").await.unwrap(),
            Some(Credential::basic("keep", "keep"))
        );

        store.save("docker.io", "hub", "pw").unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&lade).unwrap()).unwrap();
        assert!(
            doc["auths"][DOCKER_HUB_AUTH_KEY].is_object(),
            "docker's key for Hub"
        );

        assert!(store.remove("localhost:5000").unwrap());
        assert!(!store.remove("localhost:5000").unwrap());
        assert_eq!(
            store.lookup("localhost:5000").await.unwrap(),
            Some(Credential::basic("d", "d")),
            "docker's entry is visible again"
        );
        assert!(store.remove("docker.io").unwrap());
        assert!(store.lookup("keep.example").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let lade = dir.path().join("auth.json");
        write(&lade, "{not json");
        let store = CredentialStore::new(Some(lade.clone()), None);
        let err = store.lookup("x.example").await.unwrap_err().to_string();
        assert!(
            err.contains("auth.json") && err.contains("invalid JSON"),
            "{err}"
        );
        assert!(
            store.save("x.example", "u", "p").is_err(),
            "never overwrite a broken file"
        );
        write(&lade, r#"{"auths": {"x.example": {"auth": "!!!"}}}"#);
        let err = store.lookup("x.example").await.unwrap_err().to_string();
        assert!(err.contains("base64"), "{err}");
    }

    #[test]
    fn debug_redacts_secrets() {
        let s = format!(
            "{:?} {:?}",
            Credential::basic("user", "hunter2"),
            Credential::IdentityToken("tok123".into())
        );
        assert!(
            s.contains("user") && !s.contains("hunter2") && !s.contains("tok123"),
            "{s}"
        );
    }

    /// A fake `docker-credential-*` on PATH (a shell script) exercises the helper protocol.
    #[tokio::test]
    async fn credential_helpers() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let helper = |name: &str, body: &str| {
            let p = bin.join(format!("docker-credential-{name}"));
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        helper(
            "lade-test-store",
            r#"read url; if [ "$1" = get ] && [ "$url" = "reg.example" ]; then echo '{"ServerURL":"reg.example","Username":"hu","Secret":"hs"}'; elif [ "$url" = "tok.example" ]; then echo '{"Username":"<token>","Secret":"rt"}'; else echo "credentials not found in native keychain"; exit 1; fi"#,
        );
        helper("lade-test-broken", "echo boom >&2; exit 3");
        helper("lade-test-slow", "exec sleep 30");
        let docker = dir.path().join("config.json");
        write(
            &docker,
            &serde_json::json!({
                "credsStore": "lade-test-store",
                "credHelpers": {"broken.example": "lade-test-broken", "slow.example": "lade-test-slow",
                                "missing.example": "lade-test-not-installed"},
                "auths": {"fallback.example": {"auth": BASE64.encode("f:f")},
                          "missing.example": {"auth": BASE64.encode("m:m")}}
            })
            .to_string(),
        );
        let store = CredentialStore::new(None, Some(docker))
            .with_helper_timeout(Duration::from_millis(500))
            .with_helper_dir(bin.clone());
        let lookup = |r: &'static str| {
            let store = store.clone();
            async move { store.lookup(r).await }
        };
        assert_eq!(
            lookup("reg.example").await.unwrap(),
            Some(Credential::basic("hu", "hs"))
        );
        assert_eq!(
            lookup("tok.example").await.unwrap(),
            Some(Credential::IdentityToken("rt".into()))
        );
        assert_eq!(
            lookup("fallback.example").await.unwrap(),
            Some(Credential::basic("f", "f")),
            "helper has nothing: docker's auths are used"
        );
        // An uninstalled helper is an error for the registry it serves (docker's "error
        // getting credentials"), not a silent fall back to `auths` or anonymous access.
        let err = lookup("missing.example").await.unwrap_err().to_string();
        assert!(
            err.contains("docker-credential-lade-test-not-installed")
                && err.contains("not installed")
                && err.contains("missing.example")
                && err.contains(r#"credHelpers["missing.example"]"#)
                && err.contains("config.json"),
            "{err}"
        );
        let err = lookup("broken.example").await.unwrap_err().to_string();
        assert!(
            err.contains("lade-test-broken") && err.contains("boom"),
            "{err}"
        );
        let started = std::time::Instant::now();
        let err = lookup("slow.example").await.unwrap_err().to_string();
        assert!(err.contains("no answer"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));

        // A missing credsStore fails the registries it serves, not those with their own helper
        // or with credentials in Lade's file.
        let docker2 = dir.path().join("config2.json");
        write(
            &docker2,
            &serde_json::json!({
                "credsStore": "lade-test-gone",
                "credHelpers": {"reg.example": "lade-test-store"},
            })
            .to_string(),
        );
        let lade = dir.path().join("lade/auth.json");
        let store = CredentialStore::new(Some(lade), Some(docker2)).with_helper_dir(bin.clone());
        store.save("mine.example", "me", "pw").unwrap();
        assert_eq!(
            store.lookup("reg.example").await.unwrap(),
            Some(Credential::basic("hu", "hs"))
        );
        assert_eq!(
            store.lookup("mine.example").await.unwrap(),
            Some(Credential::basic("me", "pw"))
        );
        let err = store.lookup("other.example").await.unwrap_err().to_string();
        assert!(
            err.contains("docker-credential-lade-test-gone")
                && err.contains("credsStore in")
                && err.contains("other.example"),
            "{err}"
        );
    }
}
