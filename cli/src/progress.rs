//! Build progress on stderr: a live view on a terminal (BuildKit's "tty" mode), a sequential log
//! (`--progress=plain`, BuildKit's format: `#5 [2/3] RUN make`, output lines, `#5 DONE 0.3s` /
//! `#5 CACHED`) or one JSON object per line (`--progress=json`).
//!
//! The live view is a small renderer of its own on plain ANSI sequences (cursor up, erase line)
//! rather than indicatif: BuildKit's layout is a list of steps that finish in any order, each
//! with its own timer and the last lines of its output while it runs, which maps poorly onto
//! progress bars; ~150 lines here keep the exact layout under control and add no dependency.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lade_solver::{Event, EventKind, Stream, VertexId};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tty,
    Plain,
    Json,
    Quiet,
}

/// Lines of a running step's output kept for the live view and for error reports.
const TAIL: usize = 6;
/// Lines kept per step for the error report.
const ERROR_TAIL: usize = 20;

#[derive(Debug, Clone, PartialEq)]
enum Status {
    Running(Instant),
    Done(Duration),
    Cached,
    Failed(Duration),
    Cancelled(Duration),
}

struct Step {
    vertex: VertexId,
    number: usize,
    name: String,
    instruction: String,
    status: Status,
    tail: VecDeque<String>,
    partial: String,
}

struct Inner {
    mode: Mode,
    start: Instant,
    steps: Vec<Step>,
    drawn_lines: usize,
    info: Arc<dyn Fn(VertexId) -> (String, usize) + Send + Sync>,
    width: usize,
}

/// The progress display; clone it into the solver's event callback.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Mutex<Inner>>,
}

impl Progress {
    /// `info` maps a vertex to its instruction as written and its Dockerfile line.
    pub fn new(mode: Mode, info: Arc<dyn Fn(VertexId) -> (String, usize) + Send + Sync>) -> Self {
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(120usize)
            .max(40);
        let p = Progress {
            inner: Arc::new(Mutex::new(Inner {
                mode,
                start: Instant::now(),
                steps: Vec::new(),
                drawn_lines: 0,
                info,
                width,
            })),
        };
        if mode == Mode::Tty {
            // The live view is on screen from the start, as BuildKit's is: a build that ends
            // before the first tick still redraws in place instead of printing a second frame.
            p.lock().redraw(false);
            let weak = Arc::downgrade(&p.inner);
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_millis(120));
                let Some(inner) = weak.upgrade() else { return };
                let mut g = inner.lock().unwrap_or_else(PoisonError::into_inner);
                if g.mode != Mode::Tty {
                    return;
                }
                g.redraw(false);
            });
        }
        p
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Handles one solver event.
    pub fn event(&self, e: Event) {
        let mut g = self.lock();
        g.event(e);
    }

    /// Prints a message line above the live view (or plainly).
    pub fn message(&self, msg: &str) {
        let mut g = self.lock();
        match g.mode {
            Mode::Quiet => {}
            Mode::Json => {
                let v = serde_json::json!({"type": "message", "message": msg});
                eprintln!("{v}");
            }
            Mode::Plain => eprintln!("{msg}"),
            Mode::Tty => {
                g.clear();
                eprintln!("{msg}");
                g.redraw(false);
            }
        }
    }

    /// Draws the final state and stops the live view.
    pub fn finish(&self) {
        let mut g = self.lock();
        if g.mode == Mode::Tty {
            g.redraw(true);
            g.mode = Mode::Plain;
            g.drawn_lines = 0;
        }
    }

    /// The last output lines of `vertex` (for the error report).
    pub fn tail(&self, vertex: VertexId) -> Vec<String> {
        let g = self.lock();
        g.steps
            .iter()
            .find(|s| s.vertex == vertex)
            .map(|s| {
                let mut v: Vec<String> = s.tail.iter().cloned().collect();
                if !s.partial.is_empty() {
                    v.push(s.partial.clone());
                }
                v
            })
            .unwrap_or_default()
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl Inner {
    fn step(&mut self, e: &Event) -> usize {
        if let Some(i) = self.steps.iter().position(|s| s.vertex == e.vertex) {
            return i;
        }
        let (instruction, _line) = (self.info)(e.vertex);
        let number = self.steps.len() + 1;
        self.steps.push(Step {
            vertex: e.vertex,
            number,
            name: e.name.to_string(),
            instruction,
            status: Status::Running(Instant::now()),
            tail: VecDeque::new(),
            partial: String::new(),
        });
        self.steps.len() - 1
    }

    fn json_step(&self, s: &Step, cached: bool, dur: Duration, error: Option<&str>) {
        let (_, line) = (self.info)(s.vertex);
        let mut v = serde_json::json!({
            "type": "step",
            "name": s.instruction,
            "vertex": s.name,
            "cached": cached,
            "duration_ms": u64::try_from(dur.as_millis()).unwrap_or(u64::MAX),
            "line": line,
        });
        if let Some(e) = error {
            v["error"] = serde_json::json!(e);
        }
        eprintln!("{v}");
    }

    fn event(&mut self, e: Event) {
        if self.mode == Mode::Quiet {
            // still keep output tails for error reports
            let i = self.step(&e);
            if let EventKind::Log { data, .. } = &e.kind {
                push_log(&mut self.steps[i], data);
            }
            return;
        }
        let i = self.step(&e);
        let mode = self.mode;
        match e.kind {
            EventKind::Started => {
                self.steps[i].status = Status::Running(Instant::now());
                if mode == Mode::Plain {
                    let s = &self.steps[i];
                    eprintln!("#{} {}", s.number, s.name);
                }
            }
            EventKind::Cached => {
                self.steps[i].status = Status::Cached;
                match mode {
                    Mode::Plain => {
                        let s = &self.steps[i];
                        eprintln!("#{} {}\n#{} CACHED\n", s.number, s.name, s.number);
                    }
                    Mode::Json => self.json_step(&self.steps[i], true, Duration::ZERO, None),
                    _ => {}
                }
            }
            EventKind::Log { stream, data } => {
                if mode == Mode::Plain {
                    let s = &mut self.steps[i];
                    let since = match s.status {
                        Status::Running(t) => t.elapsed(),
                        _ => Duration::ZERO,
                    };
                    let text = String::from_utf8_lossy(&data);
                    for line in text.split_inclusive('\n') {
                        let l = line.trim_end_matches('\n');
                        eprintln!("#{} {:.3} {}", s.number, since.as_secs_f64(), l);
                    }
                }
                if mode == Mode::Json {
                    let s = &self.steps[i];
                    let v = serde_json::json!({
                        "type": "log",
                        "vertex": s.name,
                        "stream": if stream == Stream::Stdout { "stdout" } else { "stderr" },
                        "data": String::from_utf8_lossy(&data),
                    });
                    eprintln!("{v}");
                }
                push_log(&mut self.steps[i], &data);
            }
            EventKind::Finished { duration } => {
                self.steps[i].status = Status::Done(duration);
                match mode {
                    Mode::Plain => {
                        let s = &self.steps[i];
                        eprintln!("#{} DONE {}\n", s.number, secs(duration));
                    }
                    Mode::Json => self.json_step(&self.steps[i], false, duration, None),
                    _ => {}
                }
            }
            EventKind::Failed { duration, error } => {
                self.steps[i].status = Status::Failed(duration);
                match mode {
                    Mode::Plain => {
                        let s = &self.steps[i];
                        eprintln!("#{} ERROR: {error}\n", s.number);
                    }
                    Mode::Json => self.json_step(&self.steps[i], false, duration, Some(&error)),
                    _ => {}
                }
            }
            EventKind::Cancelled { duration } => {
                self.steps[i].status = Status::Cancelled(duration);
                match mode {
                    Mode::Plain => {
                        let s = &self.steps[i];
                        eprintln!("#{} CANCELED\n", s.number);
                    }
                    Mode::Json => {
                        self.json_step(&self.steps[i], false, duration, Some("cancelled"))
                    }
                    _ => {}
                }
            }
        }
    }

    fn clear(&mut self) {
        if self.drawn_lines > 0 {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\x1b[{}A\x1b[J", self.drawn_lines);
            self.drawn_lines = 0;
        }
    }

    fn redraw(&mut self, last: bool) {
        let mut out = String::new();
        let done = self
            .steps
            .iter()
            .filter(|s| !matches!(s.status, Status::Running(_)))
            .count();
        out.push_str(&format!(
            "[+] Building {} ({}/{}){}\n",
            secs(self.start.elapsed()),
            done,
            self.steps.len(),
            if last { " FINISHED" } else { "" }
        ));
        let mut lines = 1;
        let w = self.width;
        for s in &self.steps {
            let right = match &s.status {
                Status::Running(t) => secs(t.elapsed()),
                Status::Done(d) => secs(*d),
                Status::Cached => "CACHED".to_string(),
                Status::Failed(d) => format!("ERROR {}", secs(*d)),
                Status::Cancelled(d) => format!("CANCELED {}", secs(*d)),
            };
            let left = format!(" => {}", s.name);
            let room = w.saturating_sub(right.len() + 2);
            let left: String = left.chars().take(room).collect();
            let pad = w.saturating_sub(left.chars().count() + right.len() + 1);
            out.push_str(&format!("{left}{}{right}\n", " ".repeat(pad)));
            lines += 1;
            if matches!(s.status, Status::Running(_)) && !last {
                let mut tail: Vec<&String> = s.tail.iter().collect();
                if !s.partial.is_empty() {
                    tail.push(&s.partial);
                }
                let skip = tail.len().saturating_sub(TAIL);
                for l in tail.into_iter().skip(skip) {
                    let l: String = l.chars().take(w.saturating_sub(5)).collect();
                    out.push_str(&format!(" => > {l}\n"));
                    lines += 1;
                }
            }
        }
        let mut err = std::io::stderr().lock();
        if self.drawn_lines > 0 {
            let _ = write!(err, "\x1b[{}A\x1b[J", self.drawn_lines);
        }
        let _ = err.write_all(out.as_bytes());
        let _ = err.flush();
        self.drawn_lines = lines;
    }
}

fn push_log(s: &mut Step, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut buf = std::mem::take(&mut s.partial);
    buf.push_str(&text);
    let mut parts: Vec<&str> = buf.split('\n').collect();
    let rest = parts.pop().unwrap_or("").to_string();
    for p in parts {
        s.tail.push_back(p.trim_end_matches('\r').to_string());
        if s.tail.len() > ERROR_TAIL {
            s.tail.pop_front();
        }
    }
    s.partial = rest;
}
