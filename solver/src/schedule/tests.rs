//! Pure-logic tests of the scheduler with in-memory ops and caches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Barrier, Notify};

use super::*;
use crate::{Error, Graph, Phase, Vertex, VertexId};

type RunFn =
    Arc<dyn Fn(RunContext<String>) -> BoxFuture<'static, Result<String, BoxError>> + Send + Sync>;

/// An op whose behaviour is a closure; counts its executions.
struct TestOp {
    label: String,
    runs: Arc<AtomicUsize>,
    run: Option<RunFn>,
    digest: Option<Result<Digest, String>>,
}

impl Op<String> for TestOp {
    fn input_digest(&self, _cx: DigestContext) -> Option<BoxFuture<'_, Result<Digest, BoxError>>> {
        let d = self.digest.clone()?;
        Some(Box::pin(async move { d.map_err(BoxError::from) }))
    }

    fn run(&self, cx: RunContext<String>) -> BoxFuture<'_, Result<String, BoxError>> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        match &self.run {
            Some(f) => f(cx),
            None => {
                let out = format!("{}({})", self.label, cx.inputs.join(","));
                Box::pin(async move { Ok(out) })
            }
        }
    }
}

/// Builds test graphs and keeps per-vertex execution counters.
#[derive(Default)]
struct Fixture {
    graph: Graph<String>,
    runs: HashMap<String, Arc<AtomicUsize>>,
}

impl Fixture {
    fn add(&mut self, label: &str, inputs: &[VertexId]) -> VertexId {
        self.add_with(label, inputs, None, None)
    }

    fn add_with(
        &mut self,
        label: &str,
        inputs: &[VertexId],
        run: Option<RunFn>,
        digest: Option<Result<Digest, String>>,
    ) -> VertexId {
        let runs = self.runs.entry(label.to_string()).or_default().clone();
        let op = Arc::new(TestOp {
            label: label.to_string(),
            runs,
            run,
            digest,
        });
        let v = Vertex::new(label, Digest::of(label.as_bytes()), op);
        self.graph.add(v, inputs).unwrap()
    }

    fn runs(&self, label: &str) -> usize {
        self.runs[label].load(Ordering::SeqCst)
    }

    fn total_runs(&self) -> usize {
        self.runs.values().map(|r| r.load(Ordering::SeqCst)).sum()
    }
}

/// An in-memory cache that logs the calls it receives.
#[derive(Default)]
struct MemCache {
    map: Mutex<HashMap<CacheKey, String>>,
    calls: Mutex<Vec<String>>,
    /// Simulates another process recording this value while we wait for the lock.
    on_lock_insert: Mutex<Option<String>>,
}

impl MemCache {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn log(&self, s: &str) {
        self.calls.lock().unwrap().push(s.to_string());
    }
}

struct LoggedGuard(Arc<MemCache>);
impl Drop for LoggedGuard {
    fn drop(&mut self) {
        self.0.log("unlock");
    }
}

struct SharedCache(Arc<MemCache>);

impl Cache<String> for SharedCache {
    fn lookup<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<Option<String>, BoxError>> {
        self.0.log("lookup");
        let v = self.0.map.lock().unwrap().get(key).cloned();
        Box::pin(async move { Ok(v) })
    }

    fn record<'a>(
        &'a self,
        key: &'a CacheKey,
        value: &'a String,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        self.0.log("record");
        self.0.map.lock().unwrap().insert(*key, value.clone());
        Box::pin(async { Ok(()) })
    }

    fn lock<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<KeyGuard, BoxError>> {
        self.0.log("lock");
        if let Some(v) = self.0.on_lock_insert.lock().unwrap().take() {
            self.0.map.lock().unwrap().insert(*key, v);
        }
        let guard = KeyGuard::new(LoggedGuard(self.0.clone()));
        Box::pin(async move { Ok(guard) })
    }
}

fn mem_cache() -> (Arc<MemCache>, Arc<dyn Cache<String>>) {
    let m = Arc::new(MemCache::default());
    (m.clone(), Arc::new(SharedCache(m)))
}

fn solver() -> Solver<String> {
    Solver::new(Arc::new(NoCache))
}

fn recorder() -> (
    Arc<Mutex<Vec<Event>>>,
    impl Fn(Event) + Send + Sync + 'static,
) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let e2 = events.clone();
    (events, move |e| e2.lock().unwrap().push(e))
}

/// A guard against a scheduler bug turning into a hung test (not synchronisation).
async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("solve did not finish: scheduler deadlock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_run_before_consumers_and_arrive_in_order() {
    let mut f = Fixture::default();
    let order = Arc::new(Mutex::new(Vec::<String>::new()));
    let mk = |label: &'static str| -> RunFn {
        let order = order.clone();
        Arc::new(move |cx: RunContext<String>| {
            let order = order.clone();
            Box::pin(async move {
                order.lock().unwrap().push(label.to_string());
                Ok(format!("{label}({})", cx.inputs.join(",")))
            })
        })
    };
    let a = f.add_with("a", &[], Some(mk("a")), None);
    let b = f.add_with("b", &[a], Some(mk("b")), None);
    let c = f.add_with("c", &[a], Some(mk("c")), None);
    // d takes c before b: input order must be kept
    let d = f.add_with("d", &[c, b], Some(mk("d")), None);
    let sol = bounded(solver().solve(&f.graph, &[d])).await.unwrap();
    assert_eq!(sol.get(d).unwrap().value, "d(c(a()),b(a()))");
    let order = order.lock().unwrap().clone();
    let pos = |x: &str| order.iter().position(|o| o == x).unwrap();
    assert!(pos("a") < pos("b") && pos("a") < pos("c"));
    assert!(pos("b") < pos("d") && pos("c") < pos("d"));
    assert_eq!(sol.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_needed_vertices_are_visited() {
    let mut f = Fixture::default();
    let a = f.add("a", &[]);
    let b = f.add("b", &[a]);
    let _unused = f.add("unused", &[a]);
    let sol = bounded(solver().solve(&f.graph, &[b])).await.unwrap();
    assert_eq!(f.runs("unused"), 0);
    assert_eq!(sol.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_bound_is_reached_and_never_exceeded() {
    const BOUND: usize = 3;
    let mut f = Fixture::default();
    let current = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    // groups of exactly BOUND ops meet at the barrier: if fewer than BOUND could run at once the
    // barrier never opens (the timeout reports it); if more ran, `max` shows it
    let barrier = Arc::new(Barrier::new(BOUND));
    let run: RunFn = {
        let (current, max, barrier) = (current.clone(), max.clone(), barrier.clone());
        Arc::new(move |_cx| {
            let (current, max, barrier) = (current.clone(), max.clone(), barrier.clone());
            Box::pin(async move {
                let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                barrier.wait().await;
                current.fetch_sub(1, Ordering::SeqCst);
                Ok(String::new())
            })
        })
    };
    let leaves: Vec<_> = (0..BOUND * 3)
        .map(|i| f.add_with(&format!("leaf{i}"), &[], Some(run.clone()), None))
        .collect();
    let top = f.add("top", &leaves);
    bounded(solver().parallelism(BOUND).solve(&f.graph, &[top]))
        .await
        .unwrap();
    assert_eq!(max.load(Ordering::SeqCst), BOUND);
    assert_eq!(f.total_runs(), BOUND * 3 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_vertices_and_shared_inputs_run_once() {
    let mut f = Fixture::default();
    let base = f.add("base", &[]);
    // two distinct ids with the same definition and inputs: one vertex
    let x1 = f.add("x", &[base]);
    let x2 = f.add("x", &[base]);
    let top = f.add("top", &[x1, x2]);
    let sol = bounded(solver().solve(&f.graph, &[top, x2])).await.unwrap();
    assert_eq!(f.runs("base"), 1);
    assert_eq!(f.runs("x"), 1);
    assert_eq!(sol.get(x1).unwrap().key, sol.get(x2).unwrap().key);
    assert_eq!(sol.get(top).unwrap().value, "top(x(base()),x(base()))");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_memoised_within_a_build() {
    let mut f = Fixture::default();
    let a = f.add("a", &[]);
    let b = f.add("b", &[a]);
    let s = solver();
    bounded(s.solve(&f.graph, &[b])).await.unwrap();
    let second = bounded(s.solve(&f.graph, &[b])).await.unwrap();
    assert_eq!(
        f.total_runs(),
        2,
        "second solve of the same build reuses results"
    );
    assert!(second.get(b).unwrap().cached);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_failure_cancels_running_siblings_and_starts_nothing_new() {
    let mut f = Fixture::default();
    let sibling_started = Arc::new(Notify::new());
    let observed_cancel = Arc::new(AtomicUsize::new(0));
    let sibling: RunFn = {
        let (started, observed) = (sibling_started.clone(), observed_cancel.clone());
        Arc::new(move |cx| {
            let (started, observed) = (started.clone(), observed.clone());
            Box::pin(async move {
                started.notify_one();
                cx.cancel.cancelled().await;
                observed.fetch_add(1, Ordering::SeqCst);
                Err("interrupted".into())
            })
        })
    };
    let bad_running = Arc::new(Notify::new());
    let failing: RunFn = {
        let (started, running) = (sibling_started.clone(), bad_running.clone());
        Arc::new(move |cx| {
            let (started, running) = (started.clone(), running.clone());
            Box::pin(async move {
                started.notified().await;
                running.notify_one();
                cx.log.write(Stream::Stderr, b"make: *** [all] Error 2\n");
                Err("process exited with code 2".into())
            })
        })
    };
    let slow = f.add_with("[a 1/2] RUN sleep", &[], Some(sibling), None);
    let bad = f.add_with("[b 1/1] RUN make", &[], Some(failing), None);
    let after_slow = f.add("[a 2/2] RUN after", &[slow]);
    // `queued` is ready only once `bad` runs (its input digest waits for that), when both
    // permits are held by `slow` and `bad`: it may only start after the failure, so never
    let queued = f.add_with("queued", &[], None, None);
    f.graph.g[queued.0].vertex.op = Arc::new(GatedOp(bad_running.clone()));
    let (events, sink) = recorder();
    let err = bounded(
        solver()
            .parallelism(2)
            .on_event(sink)
            .solve(&f.graph, &[after_slow, bad, queued]),
    )
    .await
    .unwrap_err();
    match &err {
        Error::VertexFailed {
            vertex,
            name,
            phase,
            source,
        } => {
            assert_eq!(*vertex, bad);
            assert_eq!(name, "[b 1/1] RUN make");
            assert_eq!(*phase, Phase::Execute);
            assert_eq!(source.to_string(), "process exited with code 2");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "[b 1/1] RUN make: process exited with code 2"
    );
    assert_eq!(observed_cancel.load(Ordering::SeqCst), 1);
    assert_eq!(f.runs("[a 2/2] RUN after"), 0);
    assert_eq!(f.runs("queued"), 0);
    let events = events.lock().unwrap();
    let kinds: Vec<(VertexId, &str)> = events
        .iter()
        .map(|e| {
            let k = match e.kind {
                EventKind::Started => "started",
                EventKind::Cached => "cached",
                EventKind::Log { .. } => "log",
                EventKind::Finished { .. } => "finished",
                EventKind::Failed { .. } => "failed",
                EventKind::Cancelled { .. } => "cancelled",
            };
            (e.vertex, k)
        })
        .collect();
    assert!(kinds.contains(&(bad, "log")));
    assert!(kinds.contains(&(bad, "failed")));
    assert!(kinds.contains(&(slow, "cancelled")));
    assert!(!kinds.iter().any(|(v, _)| *v == queued));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_cancellation_returns_cancelled() {
    let mut f = Fixture::default();
    let token = CancellationToken::new();
    let run: RunFn = {
        let token = token.clone();
        Arc::new(move |cx| {
            let token = token.clone();
            Box::pin(async move {
                token.cancel(); // as if the user pressed Ctrl-C now
                cx.cancel.cancelled().await;
                Err("killed".into())
            })
        })
    };
    let a = f.add_with("a", &[], Some(run), None);
    let b = f.add("b", &[a]);
    let err = bounded(solver().cancellation(token).solve(&f.graph, &[b]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err:?}");
    assert_eq!(f.runs("b"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hits_skip_execution() {
    let mut f = Fixture::default();
    let a = f.add("a", &[]);
    let b = f.add("b", &[a]);
    let (mem, cache) = mem_cache();
    bounded(Solver::new(cache.clone()).solve(&f.graph, &[b]))
        .await
        .unwrap();
    assert_eq!(f.total_runs(), 2);
    let (events, sink) = recorder();
    let sol = bounded(Solver::new(cache).on_event(sink).solve(&f.graph, &[b]))
        .await
        .unwrap();
    assert_eq!(
        f.total_runs(),
        2,
        "a fresh build with a warm cache executes nothing"
    );
    assert!(sol.get(a).unwrap().cached && sol.get(b).unwrap().cached);
    assert_eq!(sol.get(b).unwrap().value, "b(a())");
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| matches!(e.kind, EventKind::Cached)));
    assert_eq!(mem.map.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_executes_everything_and_still_records() {
    let mut f = Fixture::default();
    let a = f.add("a", &[]);
    let b = f.add("b", &[a]);
    let (mem, cache) = mem_cache();
    bounded(Solver::new(cache.clone()).solve(&f.graph, &[b]))
        .await
        .unwrap();
    mem.calls.lock().unwrap().clear();
    bounded(Solver::new(cache).no_cache(true).solve(&f.graph, &[b]))
        .await
        .unwrap();
    assert_eq!(f.total_runs(), 4);
    assert_eq!(mem.calls(), vec!["record", "record"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_cache_vertex_always_runs_and_is_not_recorded() {
    let mut f = Fixture::default();
    let a = f.add("a", &[]);
    let op = Arc::new(TestOp {
        label: "volatile".into(),
        runs: f.runs.entry("volatile".into()).or_default().clone(),
        run: None,
        digest: None,
    });
    let v = f
        .graph
        .add(
            Vertex::new("volatile", Digest::of(b"volatile"), op).never_cache(true),
            &[a],
        )
        .unwrap();
    let (mem, cache) = mem_cache();
    bounded(Solver::new(cache.clone()).solve(&f.graph, &[v]))
        .await
        .unwrap();
    bounded(Solver::new(cache).solve(&f.graph, &[v]))
        .await
        .unwrap();
    assert_eq!(f.runs("a"), 1);
    assert_eq!(f.runs("volatile"), 2);
    assert_eq!(mem.map.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_recheck_run_record_unlock_sequence() {
    let mut f = Fixture::default();
    let a = f.add("a", &[]);
    let (mem, cache) = mem_cache();
    bounded(Solver::new(cache.clone()).solve(&f.graph, &[a]))
        .await
        .unwrap();
    assert_eq!(
        mem.calls(),
        vec!["lookup", "lock", "lookup", "record", "unlock"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_recorded_by_another_process_while_waiting_for_the_lock_is_reused() {
    let mut f = Fixture::default();
    let a = f.add("a", &[]);
    let (mem, cache) = mem_cache();
    *mem.on_lock_insert.lock().unwrap() = Some("built elsewhere".into());
    let sol = bounded(Solver::new(cache).solve(&f.graph, &[a]))
        .await
        .unwrap();
    assert_eq!(f.runs("a"), 0);
    assert_eq!(sol.get(a).unwrap().value, "built elsewhere");
    assert_eq!(mem.calls(), vec!["lookup", "lock", "lookup", "unlock"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_digest_failure_names_the_vertex() {
    let mut f = Fixture::default();
    let v = f.add_with(
        "[stage 2/3] COPY missing /app",
        &[],
        None,
        Some(Err("\"missing\" not found in build context".into())),
    );
    let err = bounded(solver().solve(&f.graph, &[v])).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "[stage 2/3] COPY missing /app: failed to compute cache key: \"missing\" not found in build context"
    );
    assert_eq!(f.runs("[stage 2/3] COPY missing /app"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_report_start_logs_and_finish_with_duration() {
    let mut f = Fixture::default();
    let run: RunFn = Arc::new(|cx| {
        Box::pin(async move {
            cx.log.write(Stream::Stdout, b"hello\n");
            Ok("done".to_string())
        })
    });
    let a = f.add_with("[1/1] RUN echo hello", &[], Some(run), None);
    let (events, sink) = recorder();
    bounded(solver().on_event(sink).solve(&f.graph, &[a]))
        .await
        .unwrap();
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 3);
    assert!(events
        .iter()
        .all(|e| e.vertex == a && &*e.name == "[1/1] RUN echo hello"));
    assert!(matches!(events[0].kind, EventKind::Started));
    assert!(
        matches!(&events[1].kind, EventKind::Log { stream: Stream::Stdout, data } if data == b"hello\n")
    );
    assert!(matches!(events[2].kind, EventKind::Finished { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_are_rejected_with_vertex_names() {
    let mut f = Fixture::default();
    let a = f.add("stage a", &[]);
    let b = f.add("stage b", &[a]);
    let c = f.add("stage c", &[b]);
    f.graph.add_input(a, c).unwrap();
    let err = bounded(solver().solve(&f.graph, &[c])).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "build graph has a dependency cycle: stage a -> stage b -> stage c -> stage a"
    );
    assert_eq!(f.total_runs(), 0);
}

#[test]
fn unknown_input_is_rejected() {
    let mut f = Fixture::default();
    let mut other = Fixture::default();
    other.add("x", &[]);
    let y = other.add("y", &[]);
    assert!(matches!(
        f.graph
            .add(Vertex::new("z", Digest::of(b"z"), Arc::new(NoopOp)), &[y]),
        Err(Error::UnknownVertex { .. })
    ));
}

/// Its input digest completes once the notify fires; running it panics the test.
struct GatedOp(Arc<Notify>);
impl Op<String> for GatedOp {
    fn input_digest(&self, _cx: DigestContext) -> Option<BoxFuture<'_, Result<Digest, BoxError>>> {
        Some(Box::pin(async move {
            self.0.notified().await;
            Ok(d("gate"))
        }))
    }
    fn run(&self, _cx: RunContext<String>) -> BoxFuture<'_, Result<String, BoxError>> {
        panic!("a vertex started after the build failed");
    }
}

struct NoopOp;
impl Op<String> for NoopOp {
    fn run(&self, _cx: RunContext<String>) -> BoxFuture<'_, Result<String, BoxError>> {
        Box::pin(async { Ok(String::new()) })
    }
}

fn d(s: &str) -> Digest {
    Digest::of(s.as_bytes())
}

#[test]
fn cache_key_golden() {
    // a fixed graph: base <- copy (with input digest) <- run
    let base = CacheKey::compute(
        &d("image docker.io/library/alpine:3"),
        &[],
        Some(&d("manifest")),
    );
    let copy = CacheKey::compute(&d("copy . /app"), &[base], Some(&d("context")));
    let run = CacheKey::compute(&d("exec make"), &[copy], None);
    // changing these values invalidates every cache on every machine: bump CACHE_KEY_CONTEXT
    // instead of editing them
    assert_eq!(
        base.0.to_hex(),
        "6a8369bbb88efc48a54ccdb6a2ef0c7eb8320a60fa9de5ca46d1a4b9c738dd28"
    );
    assert_eq!(
        copy.0.to_hex(),
        "47ef1c924166a5bb93a6a6e2d03c73a32a75846b061b7c00739e620d574e49c7"
    );
    assert_eq!(
        run.0.to_hex(),
        "c73c1b3aaf94512d4c1b8c490e22ab75f908a2df514d776512890405a708bfbd"
    );
}

#[test]
fn cache_key_changes_with_every_input() {
    let (p1, p2) = (CacheKey(d("p1")), CacheKey(d("p2")));
    let key = CacheKey::compute(&d("def"), &[p1, p2], Some(&d("in")));
    let variants = [
        CacheKey::compute(&d("def2"), &[p1, p2], Some(&d("in"))),
        CacheKey::compute(&d("def"), &[p2, p1], Some(&d("in"))),
        CacheKey::compute(&d("def"), &[p1], Some(&d("in"))),
        CacheKey::compute(&d("def"), &[p1, p2, p2], Some(&d("in"))),
        CacheKey::compute(&d("def"), &[p1, CacheKey(d("p3"))], Some(&d("in"))),
        CacheKey::compute(&d("def"), &[p1, p2], Some(&d("in2"))),
        CacheKey::compute(&d("def"), &[p1, p2], None),
    ];
    for (i, v) in variants.iter().enumerate() {
        assert_ne!(*v, key, "variant {i}");
    }
    assert_eq!(key, CacheKey::compute(&d("def"), &[p1, p2], Some(&d("in"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_input_digest_reruns_the_vertex_and_its_consumers_only() {
    let (_, cache) = mem_cache();
    let build = |ctx: &str| {
        let mut f = Fixture::default();
        let base = f.add("base", &[]);
        let copy = f.add_with("copy", &[base], None, Some(Ok(d(ctx))));
        let run = f.add("run", &[copy]);
        (f, run)
    };
    let (f1, t1) = build("v1");
    bounded(Solver::new(cache.clone()).solve(&f1.graph, &[t1]))
        .await
        .unwrap();
    let (f2, t2) = build("v2");
    bounded(Solver::new(cache.clone()).solve(&f2.graph, &[t2]))
        .await
        .unwrap();
    assert_eq!(
        (f2.runs("base"), f2.runs("copy"), f2.runs("run")),
        (0, 1, 1)
    );
    let (f3, t3) = build("v2");
    bounded(Solver::new(cache).solve(&f3.graph, &[t3]))
        .await
        .unwrap();
    assert_eq!(f3.total_runs(), 0);
}

#[allow(dead_code)]
fn solve_future_is_send(s: &Solver<String>, g: &Graph<String>) {
    fn assert_send<F: Send>(_: F) {}
    assert_send(s.solve(g, &[]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_selection_as_an_input_digest() {
    struct CopyOp(Arc<crate::context::Context>);
    impl Op<String> for CopyOp {
        fn input_digest(
            &self,
            _cx: DigestContext,
        ) -> Option<BoxFuture<'_, Result<Digest, BoxError>>> {
            let ctx = self.0.clone();
            Some(Box::pin(async move {
                let sel = ctx.select_blocking(vec!["src".into()]).await?;
                Ok(sel.digest)
            }))
        }
        fn run(&self, _cx: RunContext<String>) -> BoxFuture<'_, Result<String, BoxError>> {
            Box::pin(async { Ok("copied".to_string()) })
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let key_for = |content: &str| {
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/a"), content).unwrap();
        let ctx =
            Arc::new(crate::context::Context::open(dir.path(), &[] as &[&str], None).unwrap());
        let mut g = Graph::new();
        let v = g
            .add(
                Vertex::new(
                    "[1/1] COPY src /app",
                    d("copy src /app"),
                    Arc::new(CopyOp(ctx)),
                ),
                &[],
            )
            .unwrap();
        (g, v)
    };
    let (g1, v1) = key_for("one");
    let k1 = bounded(solver().solve(&g1, &[v1]))
        .await
        .unwrap()
        .get(v1)
        .unwrap()
        .key;
    let (g2, v2) = key_for("two");
    let k2 = bounded(solver().solve(&g2, &[v2]))
        .await
        .unwrap()
        .get(v2)
        .unwrap()
        .key;
    assert_ne!(k1, k2);
    // a missing source fails the vertex with BuildKit's wording
    std::fs::remove_dir_all(dir.path().join("src")).unwrap();
    let ctx = Arc::new(crate::context::Context::open(dir.path(), &[] as &[&str], None).unwrap());
    let mut g = Graph::new();
    let v = g
        .add(
            Vertex::new(
                "[1/1] COPY src /app",
                d("copy src /app"),
                Arc::new(CopyOp(ctx)),
            ),
            &[],
        )
        .unwrap();
    let err = bounded(solver().solve(&g, &[v])).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "[1/1] COPY src /app: failed to compute cache key: \"src\": not found in the build context (check the path and .dockerignore)"
    );
}
