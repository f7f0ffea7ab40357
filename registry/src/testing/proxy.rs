//! A fault-injecting TCP proxy for plain-HTTP registries.
//!
//! It reads each request head on a client connection (HTTP/1.1 without pipelining, which is
//! what reqwest/hyper send), matches it against the configured [`Fault`]s and then either
//! answers an error status itself, or forwards the request and cuts or stalls the response
//! after a number of bytes. Everything else is relayed byte for byte.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What to do to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer this status (with a registry error body) instead of forwarding, then close.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Answer `307 Temporary Redirect` to `location` instead of forwarding, then close.
    Redirect { location: String },
    /// Forward, then close the connection after this many bytes of the response.
    Cut { after_bytes: u64 },
    /// Forward, then stop relaying the response after this many bytes, keeping the
    /// connection open (a stalled server) until the proxy is dropped.
    Stall { after_bytes: u64 },
    /// A request body larger than this (by `Content-Length`, or counted through a chunked
    /// body) gets nginx's `413 Request Entity Too Large` (its `client_max_body_size`) instead
    /// of being forwarded; smaller ones pass untouched (and are not recorded as faulted). The
    /// body is read to its end first, as nginx's lingering close does, so the client always
    /// sees the answer.
    BodyLimit { max_bytes: u64 },
}

/// A fault applied to the next `times` requests whose method and path match.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: String,
    /// Substring of the request path (and query).
    pub path_contains: String,
    pub action: FaultAction,
    pub times: usize,
}

impl Fault {
    pub fn status(method: &str, path_contains: &str, status: u16, times: usize) -> Fault {
        Fault {
            method: method.into(),
            path_contains: path_contains.into(),
            action: FaultAction::Status {
                status,
                retry_after: None,
            },
            times,
        }
    }

    /// Adds `Retry-After: secs` to a status fault.
    pub fn retry_after(mut self, secs: u64) -> Fault {
        if let FaultAction::Status { retry_after, .. } = &mut self.action {
            *retry_after = Some(secs);
        }
        self
    }

    /// Redirects matching requests to `location` (`{path}` is replaced by the request path).
    pub fn redirect(method: &str, path_contains: &str, location: &str, times: usize) -> Fault {
        Fault {
            method: method.into(),
            path_contains: path_contains.into(),
            action: FaultAction::Redirect {
                location: location.into(),
            },
            times,
        }
    }

    pub fn cut(method: &str, path_contains: &str, after_bytes: u64, times: usize) -> Fault {
        Fault {
            method: method.into(),
            path_contains: path_contains.into(),
            action: FaultAction::Cut { after_bytes },
            times,
        }
    }

    /// Refuses bodies over `max_bytes` with `413` on every matching request (see
    /// [`FaultAction::BodyLimit`]).
    pub fn body_limit(method: &str, path_contains: &str, max_bytes: u64) -> Fault {
        Fault {
            method: method.into(),
            path_contains: path_contains.into(),
            action: FaultAction::BodyLimit { max_bytes },
            times: usize::MAX,
        }
    }

    pub fn stall(method: &str, path_contains: &str, after_bytes: u64, times: usize) -> Fault {
        Fault {
            method: method.into(),
            path_contains: path_contains.into(),
            action: FaultAction::Stall { after_bytes },
            times,
        }
    }
}

/// A request seen by the proxy.
#[derive(Debug, Clone)]
pub struct ProxiedRequest {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The fault applied to it, if any.
    pub fault: Option<FaultAction>,
}

impl ProxiedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    faults: Mutex<Vec<Fault>>,
    requests: Mutex<Vec<ProxiedRequest>>,
    stop: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
}

/// A running proxy, stopped on drop (open connections are shut down).
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free loopback port and relays to `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let shared = shared.clone();
                    std::thread::spawn(move || {
                        let _ = handle(conn, upstream, &shared);
                    });
                }
            })
        };
        FaultProxy {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    pub fn add(&self, fault: Fault) {
        if let Ok(mut f) = self.shared.faults.lock() {
            f.push(fault);
        }
    }

    /// `127.0.0.1:PORT`, to use as the registry host.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests seen so far.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// How many requests a fault was applied to.
    pub fn faults_applied(&self) -> usize {
        self.requests().iter().filter(|r| r.fault.is_some()).count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Ok(conns) = self.shared.conns.lock() {
            for c in conns.iter() {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Armed = Arc<Mutex<Option<(FaultAction, u64)>>>;

fn handle(client: TcpStream, upstream: SocketAddr, shared: &Arc<Shared>) -> std::io::Result<()> {
    let up = TcpStream::connect(upstream)?;
    if let Ok(mut c) = shared.conns.lock() {
        c.push(client.try_clone()?);
        c.push(up.try_clone()?);
    }
    let client_w = Arc::new(Mutex::new(client.try_clone()?));
    let armed: Armed = Arc::new(Mutex::new(None));
    {
        let up_r = up.try_clone()?;
        let client_w = client_w.clone();
        let armed = armed.clone();
        let shared = shared.clone();
        let client_s = client.try_clone()?;
        std::thread::spawn(move || pump_down(up_r, client_w, client_s, armed, &shared));
    }
    let mut reader = BufReader::new(client.try_clone()?);
    let mut up_w = up.try_clone()?;
    // Not HTTP (a TLS hello from a client probing HTTPS): relay it untouched.
    if reader
        .fill_buf()?
        .first()
        .is_some_and(|b| !b.is_ascii_alphabetic())
    {
        std::io::copy(&mut reader, &mut up_w)?;
        let _ = up.shutdown(Shutdown::Write);
        return Ok(());
    }
    loop {
        let mut head = Vec::new();
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                let _ = up.shutdown(Shutdown::Write);
                return Ok(());
            }
            head.extend_from_slice(line.as_bytes());
            if line == "\r\n" || line == "\n" {
                break;
            }
            lines.push(line.trim_end().to_string());
        }
        let mut first = lines.first().map(|l| l.split(' ')).into_iter().flatten();
        let method = first.next().unwrap_or_default().to_string();
        let path = first.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .iter()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut action = shared.faults.lock().ok().and_then(|mut faults| {
            faults
                .iter_mut()
                .find(|f| f.times > 0 && f.method == method && path.contains(&f.path_contains))
                .map(|f| {
                    f.times -= 1;
                    f.action.clone()
                })
        });
        let mut request = ProxiedRequest {
            method,
            path,
            headers,
            fault: action.clone(),
        };
        let content_length = request
            .header("content-length")
            .and_then(|v| v.parse::<u64>().ok());
        let chunked = request
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        // A body limit: read the body (keeping it while it is within the limit), then refuse
        // it or forward it as it came.
        let mut held_body: Option<Vec<u8>> = None;
        if let Some(FaultAction::BodyLimit { max_bytes }) = action {
            let (over, body) = if let Some(n) = content_length {
                if n > max_bytes {
                    std::io::copy(&mut (&mut reader).take(n), &mut std::io::sink())?;
                    (true, Vec::new())
                } else {
                    let mut body = Vec::new();
                    (&mut reader).take(n).read_to_end(&mut body)?;
                    (false, body)
                }
            } else if chunked {
                let mut body = Vec::new();
                let payload =
                    copy_chunked(&mut reader, &mut LimitedSink::new(&mut body, max_bytes))?;
                (payload > max_bytes, body)
            } else {
                (false, Vec::new())
            };
            if over {
                action = Some(FaultAction::Status {
                    status: 413,
                    retry_after: None,
                });
            } else {
                action = None;
                request.fault = None;
                held_body = Some(body);
            }
        }
        let path = request.path.clone();
        if let Ok(mut r) = shared.requests.lock() {
            r.push(request);
        }
        // A fault answered here: the response, then both connections closed.
        let answer = match &action {
            Some(FaultAction::Redirect { location }) => {
                let resp = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    location.replace("{path}", &path)
                );
                Some(resp)
            }
            Some(FaultAction::Status {
                status: 413,
                retry_after: None,
            }) => {
                // What nginx answers over its client_max_body_size: an HTML page.
                let body = "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n\
                            <body>\r\n<center><h1>413 Request Entity Too Large</h1></center>\r\n\
                            </body>\r\n</html>\r\n";
                let resp = format!(
                    "HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                Some(resp)
            }
            Some(FaultAction::Status {
                status,
                retry_after,
            }) => {
                let body = format!(
                    r#"{{"errors":[{{"code":"UNAVAILABLE","message":"injected {status} by the test proxy"}}]}}"#
                );
                let mut resp = format!(
                    "HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                if let Some(s) = retry_after {
                    resp.push_str(&format!("Retry-After: {s}\r\n"));
                }
                resp.push_str("\r\n");
                resp.push_str(&body);
                Some(resp)
            }
            _ => None,
        };
        if let Some(resp) = answer {
            if let Ok(mut w) = client_w.lock() {
                let _ = w.write_all(resp.as_bytes());
                let _ = w.flush();
            }
            let _ = client.shutdown(Shutdown::Both);
            let _ = up.shutdown(Shutdown::Both);
            return Ok(());
        }
        match action {
            Some(a) => {
                let after = match a {
                    FaultAction::Cut { after_bytes } | FaultAction::Stall { after_bytes } => {
                        after_bytes
                    }
                    FaultAction::Status { .. }
                    | FaultAction::Redirect { .. }
                    | FaultAction::BodyLimit { .. } => 0,
                };
                if let Ok(mut g) = armed.lock() {
                    *g = Some((a, after));
                }
            }
            None => {
                if let Ok(mut g) = armed.lock() {
                    *g = None;
                }
            }
        }
        up_w.write_all(&head)?;
        if let Some(body) = held_body {
            up_w.write_all(&body)?;
        } else if let Some(n) = content_length {
            std::io::copy(&mut (&mut reader).take(n), &mut up_w)?;
        } else if chunked {
            copy_chunked(&mut reader, &mut up_w)?;
        }
        up_w.flush()?;
    }
}

/// Relays a chunked body verbatim up to and including its last chunk and trailer; returns the
/// payload bytes (the sum of the chunk sizes).
fn copy_chunked(r: &mut BufReader<TcpStream>, w: &mut impl Write) -> std::io::Result<u64> {
    let mut payload = 0;
    loop {
        let mut size_line = String::new();
        if r.read_line(&mut size_line)? == 0 {
            return Ok(payload);
        }
        w.write_all(size_line.as_bytes())?;
        let size_hex = size_line.trim().split(';').next().unwrap_or("0");
        let size = u64::from_str_radix(size_hex, 16).unwrap_or(0);
        if size == 0 {
            // trailer lines until the empty one
            loop {
                let mut line = String::new();
                if r.read_line(&mut line)? == 0 {
                    return Ok(payload);
                }
                w.write_all(line.as_bytes())?;
                if line == "\r\n" || line == "\n" {
                    return Ok(payload);
                }
            }
        }
        payload += size;
        std::io::copy(&mut r.take(size + 2), w)?;
    }
}

/// Keeps what is written while it stays within `limit` bytes plus 1 MiB of chunk framing,
/// then discards the rest: a refused body is drained without being held in memory.
struct LimitedSink<'a> {
    out: &'a mut Vec<u8>,
    limit: u64,
    over: bool,
}

impl<'a> LimitedSink<'a> {
    fn new(out: &'a mut Vec<u8>, limit: u64) -> Self {
        LimitedSink {
            out,
            limit,
            over: false,
        }
    }
}

impl Write for LimitedSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.over && (self.out.len() + buf.len()) as u64 <= self.limit + (1 << 20) {
            self.out.extend_from_slice(buf);
        } else {
            self.over = true;
            self.out.clear();
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn pump_down(
    mut up: TcpStream,
    client_w: Arc<Mutex<TcpStream>>,
    client: TcpStream,
    armed: Armed,
    shared: &Shared,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match up.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = client.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        let mut stop_after: Option<(FaultAction, usize)> = None;
        if let Ok(mut g) = armed.lock() {
            if let Some((action, remaining)) = g.as_mut() {
                if n as u64 > *remaining {
                    stop_after = Some((action.clone(), *remaining as usize));
                    *g = None;
                } else {
                    *remaining -= n as u64;
                }
            }
        }
        let keep = stop_after.as_ref().map_or(n, |(_, k)| *k);
        if let Ok(mut w) = client_w.lock() {
            if w.write_all(&buf[..keep]).and_then(|()| w.flush()).is_err() {
                let _ = up.shutdown(Shutdown::Both);
                return;
            }
        }
        match stop_after {
            None => {}
            Some((FaultAction::Stall { .. }, _)) => {
                while !shared.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = client.shutdown(Shutdown::Both);
                let _ = up.shutdown(Shutdown::Both);
                return;
            }
            Some(_) => {
                let _ = client.shutdown(Shutdown::Both);
                let _ = up.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}
