//! Test harness (feature `test-support`): a real registry and friends, for integration tests.
//!
//! - [`TestRegistry`]: Debian's `docker-registry` (the reference Distribution registry) on a
//!   free loopback port with a temp storage directory; plain HTTP, htpasswd basic auth behind
//!   TLS with a CA made for the test ([`TestRegistry::basic_tls`]), or token auth
//!   ([`TestRegistry::token`]). Killed on drop; ready when `/v2/` answers (polled, no sleeps).
//!   Its access log, storage directory and blob files are reachable for assertions.
//! - [`TokenServer`]: a minimal token server issuing JWTs signed by a test key the registry
//!   trusts (`auth: token` with `rootcertbundle`).
//! - [`FaultProxy`]: a TCP proxy that injects failures in front of a plain registry: error
//!   statuses, connections cut mid-response, stalled responses.
//!
//! A missing tool panics with the Debian package to install; nothing silently passes.
#![allow(clippy::print_stderr)]

mod proxy;
mod token;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use proxy::{Fault, FaultAction, FaultProxy, ProxiedRequest};
pub use token::TokenServer;

use crate::{ClientConfig, Credential, Digest, Reference, RetryPolicy};

/// Panics with an install hint when `tool` is not on PATH.
pub fn require_tool(tool: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{tool} is not installed: `apt-get install {package}` (or run .ci/setup)")
    })
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// How to start a [`TestRegistry`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Serve HTTPS with a certificate from a CA made for this registry.
    pub tls: bool,
    /// htpasswd basic auth with this user and password.
    pub basic_auth: Option<(String, String)>,
    /// With `tls`: require a client certificate signed by the test CA (`http.tls.clientcas`).
    /// [`TestRegistry::client_cert_files`] gives the pair; [`TestRegistry::certs_dir`] holds it
    /// as `client.cert`/`client.key` unless `client_cert_outside_certs_d` is set.
    pub client_cert: bool,
    pub client_cert_outside_certs_d: bool,
    /// Token auth: `(realm, service, issuer, root certificate bundle)`.
    pub token_auth: Option<(String, String, String, PathBuf)>,
}

/// A running `docker-registry`, killed on drop.
pub struct TestRegistry {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    options: RegistryOptions,
}

/// One line of the registry's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogEntry {
    pub method: String,
    /// Path and query, as requested.
    pub path: String,
    pub status: u16,
}

impl TestRegistry {
    /// Plain HTTP, no auth.
    pub fn plain() -> TestRegistry {
        TestRegistry::start(RegistryOptions::default())
    }

    /// HTTPS (certificate from a CA made for the test, see [`TestRegistry::certs_dir`]) with
    /// htpasswd basic auth for `user`/`password`.
    pub fn basic_tls(user: &str, password: &str) -> TestRegistry {
        TestRegistry::start(RegistryOptions {
            tls: true,
            basic_auth: Some((user.into(), password.into())),
            ..RegistryOptions::default()
        })
    }

    /// Plain HTTP with token auth delegated to `server`.
    pub fn token(server: &TokenServer) -> TestRegistry {
        TestRegistry::start(RegistryOptions {
            token_auth: Some((
                server.realm(),
                server.service().to_string(),
                server.issuer().to_string(),
                server.root_cert_bundle().to_path_buf(),
            )),
            ..RegistryOptions::default()
        })
    }

    pub fn start(options: RegistryOptions) -> TestRegistry {
        let bin = require_tool("docker-registry", "docker-registry");
        let mut dir = tempfile::Builder::new()
            .prefix("lade-test-registry")
            .tempdir()
            .expect("temp dir");
        if options.tls {
            make_tls_files(dir.path(), options.client_cert);
        }
        if let Some((user, password)) = &options.basic_auth {
            require_tool("htpasswd", "apache2-utils");
            let line = run(Command::new("htpasswd").args(["-Bbn", user, password]));
            std::fs::write(dir.path().join("htpasswd"), line).expect("write htpasswd");
        }
        // The port is chosen free but may be taken before the registry binds it: retry.
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let config = dir.path().join("config.yml");
            std::fs::write(&config, registry_config(dir.path(), addr, &options))
                .expect("write registry config");
            let stdout = std::fs::File::create(dir.path().join("access.log")).expect("log file");
            let stderr = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
            let child = Command::new(&bin)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut reg = TestRegistry {
                child,
                dir,
                addr,
                options: options.clone(),
            };
            match reg.wait_ready() {
                Ok(()) => {
                    if let Some(ca) = reg.ca_cert() {
                        let d = reg.dir.path().join("certs.d").join(reg.host());
                        std::fs::create_dir_all(&d).expect("certs.d dir");
                        std::fs::copy(ca, d.join("ca.crt")).expect("copy ca.crt");
                        if let Some((cert, key)) = reg.client_cert_files() {
                            if !reg.options.client_cert_outside_certs_d {
                                std::fs::copy(cert, d.join("client.cert")).expect("copy cert");
                                std::fs::copy(key, d.join("client.key")).expect("copy key");
                            }
                        }
                    }
                    return reg;
                }
                Err(log) => {
                    last_log = log;
                    let _ = reg.child.kill();
                    let _ = reg.child.wait();
                    // take the directory back for the next try
                    dir = std::mem::replace(&mut reg.dir, tempfile::tempdir().expect("temp dir"));
                    if !last_log.contains("address already in use") {
                        break;
                    }
                }
            }
        }
        panic!("docker-registry did not start:\n{last_log}");
    }

    /// Polls until the registry answers on its port (the child exiting fails at once).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}:\n{}", self.log_text()));
            }
            if self.answers() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after 30s:\n{}", self.log_text()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether something answers HTTP (or a TLS handshake byte) on the port.
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if self.options.tls {
            // A TLS server answers a plain request with an HTTP 400 or an alert: it is serving.
            let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
        } else {
            let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: x\r\n\r\n");
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if n > 0)
    }

    /// `127.0.0.1:PORT`: the registry part of references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http(s)://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        let scheme = if self.options.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `HOST/<repo_and_tag>` parsed.
    pub fn reference(&self, repo_and_tag: &str) -> Reference {
        Reference::parse(&format!("{}/{repo_and_tag}", self.host())).expect("valid test reference")
    }

    /// The basic-auth user and password, when the registry has them.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.options
            .basic_auth
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The CA certificate (PEM) that signed a TLS registry's certificate.
    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.options.tls.then(|| self.dir.path().join("ca.crt"))
    }

    /// The client certificate and key (PEM) a registry started with `client_cert` accepts.
    pub fn client_cert_files(&self) -> Option<(PathBuf, PathBuf)> {
        (self.options.tls && self.options.client_cert).then(|| {
            (
                self.dir.path().join("client.crt"),
                self.dir.path().join("client.key"),
            )
        })
    }

    /// A `certs.d`-style directory holding `<host:port>/ca.crt` for a TLS registry (pass it as
    /// [`ClientConfig::certs_dirs`], or `LADE_CERTS_DIR` for the CLI).
    pub fn certs_dir(&self) -> Option<PathBuf> {
        self.options.tls.then(|| self.dir.path().join("certs.d"))
    }

    /// The filesystem driver's root directory.
    pub fn storage_root(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps a blob's bytes (to corrupt or delete them in tests).
    pub fn blob_data_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.storage_root()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The access log so far (combined log format, one request per line).
    pub fn access_log(&self) -> Vec<AccessLogEntry> {
        let text = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines().filter_map(parse_access_line).collect()
    }

    /// The registry's own log (stderr).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A client config for this registry: its CA trusted, no credential files, fast retries
    /// and short timeouts. Add `credential_overrides` to log in.
    pub fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig {
            certs_dirs: self.certs_dir().into_iter().collect(),
            retry: RetryPolicy {
                max_attempts: 4,
                base_delay: Duration::from_millis(50),
                max_delay: Duration::from_secs(2),
            },
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            ..ClientConfig::default()
        };
        if let Some((u, p)) = self.credentials() {
            cfg.credential_overrides
                .insert(self.host(), Credential::basic(u, p));
        }
        cfg
    }

    /// The test directory (config, logs, storage, certs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_access_line(line: &str) -> Option<AccessLogEntry> {
    // 127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 401 87 "" "lade/0.1.0"
    let start = line.find('"')? + 1;
    let end = start + line[start..].find('"')?;
    let mut req = line[start..end].split(' ');
    let method = req.next()?.to_string();
    let path = req.next()?.to_string();
    let status = line[end + 1..].split_whitespace().next()?.parse().ok()?;
    Some(AccessLogEntry {
        method,
        path,
        status,
    })
}

fn registry_config(dir: &Path, addr: SocketAddr, o: &RegistryOptions) -> String {
    let tls = if o.tls {
        let mut t = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            dir.join("server.crt").display(),
            dir.join("server.key").display()
        );
        if o.client_cert {
            t.push_str(&format!(
                "    clientcas:\n      - {}\n",
                dir.join("ca.crt").display()
            ));
        }
        t
    } else {
        String::new()
    };
    let mut cfg = format!(
        r#"version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: lade-test-secret
{tls}  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: false
"#,
        storage = dir.join("storage").display(),
    );
    if o.basic_auth.is_some() {
        cfg.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: lade-test\n    path: {}\n",
            dir.join("htpasswd").display()
        ));
    } else if let Some((realm, service, issuer, bundle)) = &o.token_auth {
        cfg.push_str(&format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
            bundle.display()
        ));
    }
    cfg
}

/// A CA (`ca.crt`) and a server certificate for 127.0.0.1/localhost signed by it; with
/// `client`, also a client certificate (`client.crt`, `client.key`).
fn make_tls_files(dir: &Path, client: bool) {
    require_tool("openssl", "openssl");
    let openssl = || {
        let mut c = Command::new("openssl");
        c.current_dir(dir);
        c
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(openssl()
        .args(["req", "-x509"])
        .args(ec)
        .args(["-keyout", "ca.key", "-out", "ca.crt", "-days", "3"])
        .args(["-subj", "/CN=lade test CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]));
    let mut leaves = vec![(
        "server",
        "/CN=127.0.0.1",
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )];
    if client {
        leaves.push((
            "client",
            "/CN=lade test client",
            "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        ));
    }
    for (name, subject, ext) in leaves {
        let (key, csr, crt, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        run(openssl()
            .arg("req")
            .args(ec)
            .args(["-keyout", &key, "-out", &csr, "-subj", subject]));
        std::fs::write(
            dir.join(&extfile),
            format!("basicConstraints=CA:FALSE\n{ext}"),
        )
        .expect("write extension file");
        run(openssl()
            .args(["x509", "-req", "-in", &csr, "-out", &crt, "-days", "3"])
            .args(["-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"])
            .args(["-extfile", &extfile]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_access_log_lines() {
        let e = parse_access_line(
            r#"127.0.0.1 - - [25/Nov/2025:20:39:00 +0000] "POST /v2/b/blobs/uploads/?from=a&mount=sha256%3Aab HTTP/1.1" 201 0 "" "lade/0.1.0""#,
        )
        .unwrap();
        assert_eq!(e.method, "POST");
        assert_eq!(e.path, "/v2/b/blobs/uploads/?from=a&mount=sha256%3Aab");
        assert_eq!(e.status, 201);
        assert!(parse_access_line("time=... level=info msg=hello").is_none());
    }

    #[test]
    fn config_nests_tls_under_http() {
        let o = RegistryOptions {
            tls: true,
            basic_auth: Some(("u".into(), "p".into())),
            ..RegistryOptions::default()
        };
        let cfg = registry_config(Path::new("/d"), ([127, 0, 0, 1], 1).into(), &o);
        let http = cfg.find("http:\n").unwrap();
        let tls = cfg.find("  tls:\n").unwrap();
        let health = cfg.find("health:").unwrap();
        assert!(http < tls && tls < health, "{cfg}");
        assert_eq!(cfg.matches("tls:").count(), 1, "{cfg}");
        assert!(cfg.contains("htpasswd:"));
    }
}
