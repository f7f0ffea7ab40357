//! The generic parallel scheduler: walks a [`Graph`] from the requested targets, computes each
//! vertex's [`CacheKey`], reuses cached results and runs the ops of the rest concurrently.
//!
//! Per vertex, once all its inputs are done:
//!
//! 1. await its input-content digest (started for every needed vertex when the solve begins);
//! 2. key = [`CacheKey::compute`]`(definition, input keys in order, input digest)`;
//! 3. take the in-process lock of the key, reuse a result memoised earlier in this build;
//! 4. unless `--no-cache` or [`Vertex::never_cache`](crate::Vertex::never_cache):
//!    [`Cache::lookup`] (hit: reuse), then [`Cache::lock`] (cross-process), then
//!    [`Cache::lookup`] again (another build may have recorded it while we waited);
//! 5. take a parallelism permit, run the [`Op`], [`Cache::record`] the result (not for
//!    never-cache vertices), release the cross-process lock, memoise.
//!
//! The first failure cancels the build's [`CancellationToken`]: no vertex starts afterwards,
//! running ops observe the token and return, and the solve returns the failing vertex's error
//! once every running op has returned. The scheduler never prints; it reports [`Event`]s.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
pub use tokio_util::sync::CancellationToken;

use crate::digest::{Digest, DigestBuilder};
use crate::graph::{Graph, Vertex, VertexId};
use crate::{Error, Phase, Result};

/// The error type ops and caches return; the solver keeps it as the `source` of
/// [`Error::VertexFailed`] so callers can downcast it to their own error type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A boxed, sendable future (what [`Op`] and [`Cache`] methods return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// BLAKE3 `derive_key` context of the cache-key encoding. Changing the encoding means changing
/// this string, which invalidates every key recorded with the old one.
pub const CACHE_KEY_CONTEXT: &str = "lade solver cache-key v1";

/// Identity of a vertex's result across runs and machines:
/// `BLAKE3-derive_key(CACHE_KEY_CONTEXT, definition[32] ‖ u64le(n) ‖ input_key[32] × n ‖
/// (0x00 | 0x01 ‖ input_digest[32]))`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct CacheKey(pub Digest);

impl CacheKey {
    /// The key of a vertex with this definition, these input keys (in input order) and this
    /// optional input-content digest.
    pub fn compute(definition: &Digest, inputs: &[CacheKey], input: Option<&Digest>) -> Self {
        let mut b = DigestBuilder::new(CACHE_KEY_CONTEXT);
        b.digest(definition).u64(inputs.len() as u64);
        for k in inputs {
            b.digest(&k.0);
        }
        b.opt_digest(input);
        CacheKey(b.finish())
    }
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

/// Which output stream a log chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One progress report. Every event names its vertex (id and display name).
#[derive(Clone, Debug)]
pub struct Event {
    pub vertex: VertexId,
    pub name: Arc<str>,
    pub kind: EventKind,
}

#[derive(Clone, Debug)]
pub enum EventKind {
    /// The op started executing (after its cache miss and once a parallelism permit was free).
    Started,
    /// The result was reused (store cache hit, or already built earlier in this build); the op
    /// did not run. Terminal.
    Cached,
    /// A chunk of the op's output, as the op reported it (not split into lines).
    Log { stream: Stream, data: Vec<u8> },
    /// The op succeeded and its result was recorded. Terminal.
    Finished { duration: Duration },
    /// This vertex is the build's failure. Terminal.
    Failed { duration: Duration, error: String },
    /// The op was running when another vertex failed (or the build was cancelled) and it
    /// returned after observing the cancellation. Terminal.
    Cancelled { duration: Duration },
}

/// The spawned computation of one vertex's input-content digest.
type DigestTask = JoinHandle<Result<Option<Digest>, BoxError>>;

type EventFn = Arc<dyn Fn(Event) + Send + Sync>;

/// Handle an op uses to report its output; each write becomes an [`EventKind::Log`] event.
#[derive(Clone)]
pub struct LogSink {
    events: Option<EventFn>,
    vertex: VertexId,
    name: Arc<str>,
}

impl LogSink {
    pub fn write(&self, stream: Stream, data: &[u8]) {
        if let Some(f) = &self.events {
            f(Event {
                vertex: self.vertex,
                name: self.name.clone(),
                kind: EventKind::Log {
                    stream,
                    data: data.to_vec(),
                },
            });
        }
    }
}

/// What [`Op::run`] receives.
pub struct RunContext<T> {
    pub vertex: VertexId,
    pub name: Arc<str>,
    pub key: CacheKey,
    /// The results of the vertex's inputs, in input order.
    pub inputs: Vec<T>,
    /// Cancelled when another vertex fails or the build is cancelled: stop (kill the process),
    /// clean up and return promptly, with any error.
    pub cancel: CancellationToken,
    pub log: LogSink,
}

/// What [`Op::input_digest`] receives.
pub struct DigestContext {
    pub vertex: VertexId,
    pub name: Arc<str>,
    pub cancel: CancellationToken,
}

/// The work of one vertex. Implemented by the lowering layer (wrapping the executor); the
/// scheduler only calls it.
pub trait Op<T>: Send + Sync + 'static {
    /// Digest of the content this vertex reads from outside the graph (the build-context files
    /// a COPY selects, the manifest digest of a base image), or `None` if it reads nothing the
    /// definition does not already name. Called once per build as soon as the solve starts,
    /// concurrently with the vertex's inputs; the future must not depend on them. CPU-heavy
    /// work belongs in `spawn_blocking`/rayon, not on the async worker. An error fails the
    /// vertex ("failed to compute cache key").
    fn input_digest(&self, cx: DigestContext) -> Option<BoxFuture<'_, Result<Digest, BoxError>>> {
        let _ = cx;
        None
    }

    /// Produces the vertex's result from its inputs' results. Runs only on a cache miss, at
    /// most once per cache key per build, while holding a parallelism permit and the key's
    /// cross-process lock.
    fn run(&self, cx: RunContext<T>) -> BoxFuture<'_, Result<T, BoxError>>;
}

/// A held per-key lock; dropping it releases the lock.
pub struct KeyGuard {
    _held: Option<Box<dyn Send + Sync>>,
}

impl KeyGuard {
    /// A guard that keeps `held` (e.g. a locked file) alive until released.
    pub fn new(held: impl Send + Sync + 'static) -> Self {
        KeyGuard {
            _held: Some(Box::new(held)),
        }
    }

    /// A guard holding nothing (for caches without cross-process locking).
    pub fn none() -> Self {
        KeyGuard { _held: None }
    }
}

/// The result cache the solver consults, implemented by the store.
///
/// Call sequence for one key (never concurrently for one key within one solver):
/// `lookup` → on miss `lock` → `lookup` → on miss the op runs → `record` → guard dropped.
/// With `--no-cache` only `record` is called (no lock: the build re-executes anyway); for a
/// never-cache vertex, nothing. `record` may meet a key that another process recorded in the
/// meantime (`--no-cache` builds); either result is valid.
pub trait Cache<T>: Send + Sync + 'static {
    fn lookup<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<Option<T>, BoxError>>;

    fn record<'a>(&'a self, key: &'a CacheKey, value: &'a T)
        -> BoxFuture<'a, Result<(), BoxError>>;

    /// Takes an exclusive lock on `key` shared by every process using the same store, waiting
    /// as long as another holder has it, so that two builds at once execute each key once.
    /// The default takes no lock.
    fn lock<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<KeyGuard, BoxError>> {
        let _ = key;
        Box::pin(async { Ok(KeyGuard::none()) })
    }
}

/// A cache that never hits and records nothing.
pub struct NoCache;

impl<T: Send + Sync + 'static> Cache<T> for NoCache {
    fn lookup<'a>(&'a self, _key: &'a CacheKey) -> BoxFuture<'a, Result<Option<T>, BoxError>> {
        Box::pin(async { Ok(None) })
    }

    fn record<'a>(
        &'a self,
        _key: &'a CacheKey,
        _value: &'a T,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The result of one vertex.
#[derive(Clone, Debug)]
pub struct Solved<T> {
    pub key: CacheKey,
    pub value: T,
    /// `true` when the op did not run for this solve (cache hit or memoised).
    pub cached: bool,
}

/// Results of every vertex a solve visited (targets and everything they need).
#[derive(Debug)]
pub struct Solution<T> {
    results: HashMap<VertexId, Solved<T>>,
}

impl<T> Solution<T> {
    pub fn get(&self, vertex: VertexId) -> Option<&Solved<T>> {
        self.results.get(&vertex)
    }

    pub fn iter(&self) -> impl Iterator<Item = (VertexId, &Solved<T>)> {
        self.results.iter().map(|(k, v)| (*k, v))
    }

    pub fn len(&self) -> usize {
        self.results.len()
    }

    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }
}

struct Memo<T> {
    done: Mutex<HashMap<CacheKey, T>>,
    keys: Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl<T: Clone> Memo<T> {
    fn get(&self, key: &CacheKey) -> Option<T> {
        self.done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn insert(&self, key: CacheKey, value: T) {
        self.done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, value);
    }

    fn key_lock(&self, key: CacheKey) -> Arc<tokio::sync::Mutex<()>> {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone()
    }
}

/// Runs graphs. One `Solver` per build: results are memoised by cache key across its solves.
pub struct Solver<T> {
    cache: Arc<dyn Cache<T>>,
    parallelism: usize,
    no_cache: bool,
    events: Option<EventFn>,
    cancel: CancellationToken,
    memo: Arc<Memo<T>>,
}

/// Number of ops run at once unless [`Solver::parallelism`] says otherwise: the CPU count.
pub fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl<T: Clone + Send + Sync + 'static> Solver<T> {
    pub fn new(cache: Arc<dyn Cache<T>>) -> Self {
        Solver {
            cache,
            parallelism: default_parallelism(),
            no_cache: false,
            events: None,
            cancel: CancellationToken::new(),
            memo: Arc::new(Memo {
                done: Mutex::new(HashMap::new()),
                keys: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// At most `n` ops execute at once (`n` is raised to 1).
    pub fn parallelism(mut self, n: usize) -> Self {
        self.parallelism = n.max(1);
        self
    }

    /// `--no-cache`: never look results up, still record them.
    pub fn no_cache(mut self, no_cache: bool) -> Self {
        self.no_cache = no_cache;
        self
    }

    /// Receives every progress event, from any thread; must be cheap and must not block.
    pub fn on_event(mut self, f: impl Fn(Event) + Send + Sync + 'static) -> Self {
        self.events = Some(Arc::new(f));
        self
    }

    /// Cancelling `token` (e.g. on Ctrl-C) cancels running solves; they return
    /// [`Error::Cancelled`].
    pub fn cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Builds `targets` and what they need; returns the results of every visited vertex, or the
    /// first failure. Rejects unknown targets and graphs with a cycle before running anything.
    pub async fn solve(&self, graph: &Graph<T>, targets: &[VertexId]) -> Result<Solution<T>> {
        let plan = Plan::new(graph, targets)?;
        let token = self.cancel.child_token();
        let shared = Arc::new(Shared {
            cache: self.cache.clone(),
            events: self.events.clone(),
            memo: self.memo.clone(),
            permits: Arc::new(Semaphore::new(self.parallelism)),
            token: token.clone(),
            no_cache: self.no_cache,
            failed: AtomicBool::new(false),
        });

        // input-content digests start now, concurrently with everything else
        let mut digests: Vec<Option<DigestTask>> = plan
            .nodes
            .iter()
            .map(|n| {
                let op = n.vertex.op.clone();
                let cx = DigestContext {
                    vertex: n.id,
                    name: n.vertex.name.clone(),
                    cancel: token.clone(),
                };
                Some(tokio::spawn(async move {
                    match op.input_digest(cx) {
                        Some(f) => f.await.map(Some),
                        None => Ok(None),
                    }
                }))
            })
            .collect();

        let mut pending: Vec<usize> = plan.nodes.iter().map(|n| n.parents.len()).collect();
        let mut results: Vec<Option<Solved<T>>> = plan.nodes.iter().map(|_| None).collect();
        let mut ready: VecDeque<usize> =
            (0..plan.nodes.len()).filter(|&i| pending[i] == 0).collect();
        let mut running: JoinSet<(usize, Outcome<T>)> = JoinSet::new();
        let mut task_of: HashMap<tokio::task::Id, usize> = HashMap::new();
        let mut failure: Option<Error> = None;

        loop {
            if failure.is_none() && !token.is_cancelled() {
                while let Some(i) = ready.pop_front() {
                    let node = &plan.nodes[i];
                    let mut input_keys = Vec::with_capacity(node.inputs.len());
                    let mut input_values = Vec::with_capacity(node.inputs.len());
                    for &p in &node.inputs {
                        if let Some(s) = &results[p] {
                            input_keys.push(s.key);
                            input_values.push(s.value.clone());
                        }
                    }
                    let job = Job {
                        id: node.id,
                        vertex: node.vertex.clone(),
                        input_keys,
                        input_values,
                        digest: digests[i].take(),
                    };
                    let shared = shared.clone();
                    let handle = running.spawn(async move { (i, job.run(&shared).await) });
                    task_of.insert(handle.id(), i);
                }
            }
            let Some(joined) = running.join_next_with_id().await else {
                break;
            };
            let (i, outcome) = match joined {
                Ok((_, (i, outcome))) => (i, outcome),
                Err(e) => {
                    let Some(&i) = task_of.get(&e.id()) else {
                        continue;
                    };
                    let msg = panic_message(e);
                    (
                        i,
                        fail(&shared, Phase::Execute, msg.into(), Duration::ZERO, true),
                    )
                }
            };
            let node = &plan.nodes[i];
            match outcome {
                Outcome::Done(solved) => {
                    results[i] = Some(solved);
                    for &c in &node.children {
                        pending[c] -= 1;
                        if pending[c] == 0 {
                            ready.push_back(c);
                        }
                    }
                }
                Outcome::Failed {
                    phase,
                    error,
                    duration,
                    started,
                    first,
                } => {
                    if first {
                        shared.emit(
                            node.id,
                            &node.vertex.name,
                            EventKind::Failed {
                                duration,
                                error: error.to_string(),
                            },
                        );
                        failure = Some(Error::VertexFailed {
                            vertex: node.id,
                            name: node.vertex.name.to_string(),
                            phase,
                            source: error,
                        });
                        token.cancel();
                    } else if started {
                        shared.emit(
                            node.id,
                            &node.vertex.name,
                            EventKind::Cancelled { duration },
                        );
                    }
                }
                Outcome::Cancelled { started, duration } => {
                    if started {
                        shared.emit(
                            node.id,
                            &node.vertex.name,
                            EventKind::Cancelled { duration },
                        );
                    }
                }
            }
        }
        // digests of vertices that never got to run
        token.cancel();
        for h in digests.into_iter().flatten() {
            h.abort();
        }

        if let Some(e) = failure {
            return Err(e);
        }
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let mut out = HashMap::new();
        for (&v, &i) in &plan.index_of {
            if let Some(s) = &results[i] {
                out.insert(v, s.clone());
            }
        }
        Ok(Solution { results: out })
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if e.is_cancelled() {
        return "op task was cancelled".to_string();
    }
    let payload = e.into_panic();
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    format!("op panicked: {msg}")
}

/// The deduplicated, needed part of a graph.
struct Plan<T> {
    nodes: Vec<PlanNode<T>>,
    /// Every needed vertex (duplicates included) to its plan node.
    index_of: HashMap<VertexId, usize>,
}

struct PlanNode<T> {
    id: VertexId,
    vertex: Vertex<T>,
    /// Plan indices of the inputs, in input order (may repeat).
    inputs: Vec<usize>,
    /// Distinct plan indices of the inputs.
    parents: Vec<usize>,
    children: Vec<usize>,
}

impl<T> Plan<T> {
    fn new(graph: &Graph<T>, targets: &[VertexId]) -> Result<Self> {
        let needed = graph.needed(targets)?;
        let order = graph.topo_order()?;
        let mut nodes: Vec<PlanNode<T>> = Vec::new();
        let mut index_of: HashMap<VertexId, usize> = HashMap::new();
        let mut by_identity: HashMap<(Digest, Vec<usize>), usize> = HashMap::new();
        for v in order.into_iter().filter(|v| needed.contains(v)) {
            let node = &graph.g[v.0];
            let inputs: Vec<usize> = node.inputs.iter().map(|p| index_of[p]).collect();
            let identity = (node.vertex.definition, inputs.clone());
            if let Some(&i) = by_identity.get(&identity) {
                // an identical vertex: same definition, same inputs; it runs once
                nodes[i].vertex.never_cache |= node.vertex.never_cache;
                index_of.insert(v, i);
                continue;
            }
            let i = nodes.len();
            let mut seen = HashSet::new();
            let parents: Vec<usize> = inputs.iter().copied().filter(|p| seen.insert(*p)).collect();
            for &p in &parents {
                nodes[p].children.push(i);
            }
            nodes.push(PlanNode {
                id: v,
                vertex: node.vertex.clone(),
                inputs,
                parents,
                children: Vec::new(),
            });
            by_identity.insert(identity, i);
            index_of.insert(v, i);
        }
        Ok(Plan { nodes, index_of })
    }
}

struct Shared<T> {
    cache: Arc<dyn Cache<T>>,
    events: Option<EventFn>,
    memo: Arc<Memo<T>>,
    permits: Arc<Semaphore>,
    token: CancellationToken,
    no_cache: bool,
    failed: AtomicBool,
}

impl<T> Shared<T> {
    fn claim_failure(&self) -> bool {
        let first = !self.token.is_cancelled() && !self.failed.swap(true, Ordering::SeqCst);
        self.token.cancel();
        first
    }

    fn emit(&self, vertex: VertexId, name: &Arc<str>, kind: EventKind) {
        if let Some(f) = &self.events {
            f(Event {
                vertex,
                name: name.clone(),
                kind,
            });
        }
    }
}

enum Outcome<T> {
    Done(Solved<T>),
    Failed {
        phase: Phase,
        error: BoxError,
        duration: Duration,
        started: bool,
        /// This failure claimed the build's failure slot (and cancelled the build).
        first: bool,
    },
    Cancelled {
        started: bool,
        duration: Duration,
    },
}

struct Job<T> {
    id: VertexId,
    vertex: Vertex<T>,
    input_keys: Vec<CacheKey>,
    input_values: Vec<T>,
    digest: Option<DigestTask>,
}

/// Reports a failure from inside the vertex task. The first genuine failure of the build claims
/// the failure slot and cancels the build *before* the task releases its permit, so no vertex
/// waiting for that permit can start; failures seen after cancellation are not first.
fn fail<T>(
    sh: &Shared<T>,
    phase: Phase,
    error: BoxError,
    duration: Duration,
    started: bool,
) -> Outcome<T> {
    let first = sh.claim_failure();
    Outcome::Failed {
        phase,
        error,
        duration,
        started,
        first,
    }
}

fn failed<T>(sh: &Shared<T>, phase: Phase, error: BoxError) -> Outcome<T> {
    fail(sh, phase, error, Duration::ZERO, false)
}

fn not_started<T>() -> Outcome<T> {
    Outcome::Cancelled {
        started: false,
        duration: Duration::ZERO,
    }
}

impl<T: Clone + Send + Sync + 'static> Job<T> {
    async fn run(mut self, sh: &Shared<T>) -> Outcome<T> {
        let token = &sh.token;
        let name = self.vertex.name.clone();

        // 1. input-content digest
        let input_digest = match self.digest.take() {
            None => None,
            Some(mut h) => {
                let joined = tokio::select! {
                    j = &mut h => j,
                    _ = token.cancelled() => { h.abort(); return not_started(); }
                };
                match joined {
                    Ok(Ok(d)) => d,
                    Ok(Err(e)) => return failed(sh, Phase::InputDigest, e),
                    Err(e) => return failed(sh, Phase::InputDigest, panic_message(e).into()),
                }
            }
        };

        // 2. key
        let key = CacheKey::compute(
            &self.vertex.definition,
            &self.input_keys,
            input_digest.as_ref(),
        );

        // 3. one execution per key within this build
        let key_lock = sh.memo.key_lock(key);
        let _in_process = tokio::select! {
            g = key_lock.lock_owned() => g,
            _ = token.cancelled() => return not_started(),
        };
        if let Some(value) = sh.memo.get(&key) {
            sh.emit(self.id, &name, EventKind::Cached);
            return Outcome::Done(Solved {
                key,
                value,
                cached: true,
            });
        }

        // 4. store lookup, cross-process lock, re-check
        let use_cache = !self.vertex.never_cache && !sh.no_cache;
        let mut _guard = None;
        if use_cache {
            match sh.cache.lookup(&key).await {
                Ok(Some(value)) => return self.hit(sh, key, value),
                Ok(None) => {}
                Err(e) => return failed(sh, Phase::CacheLookup, e),
            }
            let guard = tokio::select! {
                g = sh.cache.lock(&key) => g,
                _ = token.cancelled() => return not_started(),
            };
            match guard {
                Ok(g) => _guard = Some(g),
                Err(e) => return failed(sh, Phase::CacheLock, e),
            }
            match sh.cache.lookup(&key).await {
                Ok(Some(value)) => return self.hit(sh, key, value),
                Ok(None) => {}
                Err(e) => return failed(sh, Phase::CacheLookup, e),
            }
        }

        // 5. execute
        let _permit = tokio::select! {
            p = sh.permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return not_started(),
            },
            _ = token.cancelled() => return not_started(),
        };
        if token.is_cancelled() {
            return not_started();
        }
        sh.emit(self.id, &name, EventKind::Started);
        let start = Instant::now();
        let cx = RunContext {
            vertex: self.id,
            name: name.clone(),
            key,
            inputs: std::mem::take(&mut self.input_values),
            cancel: token.clone(),
            log: LogSink {
                events: sh.events.clone(),
                vertex: self.id,
                name: name.clone(),
            },
        };
        let result = self.vertex.op.run(cx).await;
        let value = match result {
            Ok(v) => v,
            Err(error) => return fail(sh, Phase::Execute, error, start.elapsed(), true),
        };
        if !self.vertex.never_cache {
            if let Err(error) = sh.cache.record(&key, &value).await {
                return fail(sh, Phase::CacheRecord, error, start.elapsed(), true);
            }
        }
        drop(_guard);
        sh.memo.insert(key, value.clone());
        sh.emit(
            self.id,
            &name,
            EventKind::Finished {
                duration: start.elapsed(),
            },
        );
        Outcome::Done(Solved {
            key,
            value,
            cached: false,
        })
    }

    fn hit(&self, sh: &Shared<T>, key: CacheKey, value: T) -> Outcome<T> {
        sh.memo.insert(key, value.clone());
        sh.emit(self.id, &self.vertex.name, EventKind::Cached);
        Outcome::Done(Solved {
            key,
            value,
            cached: true,
        })
    }
}

#[cfg(test)]
mod tests;
