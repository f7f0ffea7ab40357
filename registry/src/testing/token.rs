//! A minimal token server for `auth: token` registries: `GET /token?service=&scope=` with
//! optional Basic credentials answers a JWT (RS256, signed by a key made for the test with
//! `openssl`, certificate sent in the `x5c` header and trusted by the registry through
//! `rootcertbundle`). Valid credentials get every action they ask for; anonymous requests get
//! a token with no access; wrong credentials get 401.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use super::{require_tool, run};

const SERVICE: &str = "lade-test-registry";
const ISSUER: &str = "lade-test-issuer";

/// A running token server, stopped on drop.
pub struct TokenServer {
    addr: SocketAddr,
    cert: PathBuf,
    _dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    log: Arc<Mutex<Vec<TokenRequest>>>,
}

/// One request the token server answered.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The user from Basic credentials, if any.
    pub user: Option<String>,
    pub scopes: Vec<String>,
    /// 200 or 401.
    pub status: u16,
}

struct Settings {
    user: String,
    password: String,
    /// Answer `access_token` instead of `token`.
    access_token_field: bool,
    key: PathBuf,
    cert_der_b64: String,
}

impl TokenServer {
    /// Accepts `user`/`password`; answers with the `token` field.
    pub fn start(user: &str, password: &str) -> TokenServer {
        TokenServer::start_with(user, password, false)
    }

    /// Like [`TokenServer::start`], answering the OAuth2 spelling `access_token` when asked.
    pub fn start_with(user: &str, password: &str, access_token_field: bool) -> TokenServer {
        require_tool("openssl", "openssl");
        let dir = tempfile::Builder::new()
            .prefix("lade-test-token")
            .tempdir()
            .expect("temp dir");
        run(Command::new("openssl")
            .current_dir(dir.path())
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
            .args(["-keyout", "token.key", "-out", "token.crt", "-days", "3"])
            .args(["-subj", "/CN=lade test token signer"]));
        let der = run(Command::new("openssl").current_dir(dir.path()).args([
            "x509",
            "-in",
            "token.crt",
            "-outform",
            "DER",
        ]));
        let settings = Arc::new(Settings {
            user: user.into(),
            password: password.into(),
            access_token_field,
            key: dir.path().join("token.key"),
            cert_der_b64: STANDARD.encode(der),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let addr = listener.local_addr().expect("token server address");
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let stop = stop.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        let _ = serve(conn, &settings, &log);
                    }
                }
            })
        };
        TokenServer {
            addr,
            cert: dir.path().join("token.crt"),
            _dir: dir,
            stop,
            thread: Some(thread),
            log,
        }
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn service(&self) -> &str {
        SERVICE
    }

    pub fn issuer(&self) -> &str {
        ISSUER
    }

    /// The certificate the registry must trust.
    pub fn root_cert_bundle(&self) -> &Path {
        &self.cert
    }

    /// Requests answered so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, s: &Settings, log: &Mutex<Vec<TokenRequest>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut auth = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut scopes = Vec::new();
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("scope=") {
            scopes.push(percent_decode(v));
        }
    }
    let user = auth
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|up| {
            up.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    let (status, body) = match &user {
        Some((u, p)) if *u != s.user || *p != s.password => (
            401,
            r#"{"details":"invalid username or password"}"#.to_string(),
        ),
        _ => {
            let granted = if user.is_some() {
                scopes.clone()
            } else {
                Vec::new()
            };
            let jwt = sign_jwt(
                s,
                user.as_ref().map(|(u, _)| u.as_str()).unwrap_or(""),
                &granted,
            );
            let field = if s.access_token_field {
                "access_token"
            } else {
                "token"
            };
            (200, format!(r#"{{"{field}":"{jwt}","expires_in":300}}"#))
        }
    };
    if let Ok(mut l) = log.lock() {
        l.push(TokenRequest {
            user: user.map(|(u, _)| u),
            scopes,
            status,
        });
    }
    let reason = if status == 200 { "OK" } else { "Unauthorized" };
    let mut w = conn;
    write!(
        w,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

fn sign_jwt(s: &Settings, subject: &str, scopes: &[String]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|scope| {
            // repository:<name>:<actions>
            let (kind, rest) = scope.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({
                "type": kind, "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [s.cert_der_b64]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": subject, "aud": SERVICE,
        "exp": now + 300, "nbf": now.saturating_sub(10), "iat": now,
        "jti": format!("{now}-{}", std::process::id()), "access": access,
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&s.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl dgst");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("feed openssl");
    let out = child.wait_with_output().expect("openssl dgst");
    assert!(
        out.status.success(),
        "openssl dgst failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(out.stdout))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
