//! Shared pieces of the bulkhead tests: a backend whose calls finish when
//! the test says, a simulated server with a true capacity, an open-loop
//! load generator, and a metrics recorder.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{oneshot, Semaphore};
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use watertight_core::BoxError;

/// A backend whose calls finish when the test answers them, in any order;
/// it counts the calls it has seen and is working on.
#[derive(Clone, Default)]
pub struct Manual {
    state: Arc<ManualState>,
}

type Reply = oneshot::Sender<Result<u32, BoxError>>;

#[derive(Default)]
struct ManualState {
    pending: Mutex<Vec<(u32, Reply)>>,
    seen: Mutex<Vec<u32>>,
    active: AtomicUsize,
}

impl Manual {
    /// The requests that reached the backend, in order.
    pub fn seen(&self) -> Vec<u32> {
        self.state.seen.lock().clone()
    }

    /// Requests reached and not yet answered.
    pub fn active(&self) -> usize {
        self.state.active.load(SeqCst)
    }

    /// Answers request `id` with `Ok(id)` (or an error if `fail`).
    pub fn answer(&self, id: u32, fail: bool) {
        let mut pending = self.state.pending.lock();
        let at = pending
            .iter()
            .position(|(r, _)| *r == id)
            .unwrap_or_else(|| panic!("request {id} is not pending"));
        let (_, tx) = pending.remove(at);
        let _ = tx.send(if fail {
            Err("backend failed".into())
        } else {
            Ok(id)
        });
    }

    /// Answers the oldest pending request.
    pub fn answer_oldest(&self) -> u32 {
        let id = self
            .state
            .pending
            .lock()
            .first()
            .expect("a pending request")
            .0;
        self.answer(id, false);
        id
    }
}

impl Service<u32> for Manual {
    type Response = u32;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, id: u32) -> Self::Future {
        let (tx, rx) = oneshot::channel();
        self.state.seen.lock().push(id);
        self.state.pending.lock().push((id, tx));
        self.state.active.fetch_add(1, SeqCst);
        let state = self.state.clone();
        Box::pin(async move {
            let r = rx.await.unwrap_or_else(|_| Err("dropped".into()));
            state.active.fetch_sub(1, SeqCst);
            r
        })
    }
}

/// The error of a [`Server`] whose queue is full: a fast `503`.
#[derive(Debug)]
pub struct Overloaded;

impl std::fmt::Display for Overloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("server overloaded")
    }
}

impl std::error::Error for Overloaded {}

/// A server with a true capacity: `capacity` requests are worked on at
/// once, each for a service time drawn uniformly from `service`; up to
/// `queue` more wait in FIFO order (so latency rises with queueing beyond
/// the capacity), and beyond that it answers at once with [`Overloaded`],
/// as a server with a bounded accept queue does.
#[derive(Clone)]
pub struct Server {
    workers: Arc<Semaphore>,
    in_system: Arc<AtomicUsize>,
    bound: usize,
    service: (Duration, Duration),
    rng: Arc<Mutex<SmallRng>>,
}

impl Server {
    pub fn new(capacity: usize, queue: usize, service: (Duration, Duration), seed: u64) -> Self {
        Server {
            workers: Arc::new(Semaphore::new(capacity)),
            in_system: Arc::new(AtomicUsize::new(0)),
            bound: capacity + queue,
            service,
            rng: Arc::new(Mutex::new(SmallRng::seed_from_u64(seed))),
        }
    }

    /// The `q` quantile of the service time: the unloaded latency.
    pub fn unloaded_quantile(&self, q: f64) -> Duration {
        let (lo, hi) = self.service;
        lo + (hi - lo).mul_f64(q)
    }
}

impl Service<()> for Server {
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        if self.in_system.fetch_add(1, SeqCst) >= self.bound {
            self.in_system.fetch_sub(1, SeqCst);
            return Box::pin(async { Err(Overloaded.into()) });
        }
        let service = {
            let (lo, hi) = self.service;
            self.rng.lock().random_range(lo..=hi)
        };
        let (workers, in_system) = (self.workers.clone(), self.in_system.clone());
        Box::pin(async move {
            let permit = workers.acquire_owned().await.expect("never closed");
            tokio::time::sleep(service).await;
            drop(permit);
            in_system.fetch_sub(1, SeqCst);
            Ok(())
        })
    }
}

/// What an open-loop run measured.
#[derive(Debug, Default)]
pub struct Run {
    /// Latencies of admitted requests that the server served, of those
    /// started after the run settled.
    pub served: Vec<Duration>,
    /// Admitted requests the server shed.
    pub shed_by_server: u64,
    /// Requests the limiter rejected.
    pub rejected: u64,
    /// The limit, read every millisecond of the settled part of the run.
    pub limits: Vec<u32>,
}

impl Run {
    pub fn p99(&mut self) -> Duration {
        self.served.sort();
        self.served[(self.served.len() * 99).div_ceil(100) - 1]
    }

    pub fn mean_limit(&self) -> f64 {
        self.limits.iter().map(|&l| f64::from(l)).sum::<f64>() / self.limits.len() as f64
    }

    pub fn min_limit(&self) -> u32 {
        *self.limits.iter().min().unwrap()
    }

    pub fn max_limit(&self) -> u32 {
        *self.limits.iter().max().unwrap()
    }
}

/// Offers `rate(elapsed)` requests per second to `svc` for `duration`, open
/// loop (arrivals do not wait for answers), reading `limit()` each
/// millisecond after `settle`; latencies are kept for requests started after
/// `settle`.
pub async fn open_loop<S>(
    svc: S,
    rate: impl Fn(Duration) -> f64,
    duration: Duration,
    settle: Duration,
    limit: impl Fn() -> u32,
) -> Run
where
    S: Service<(), Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let served = Arc::new(Mutex::new(Vec::new()));
    let shed = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let mut limits = Vec::new();
    let start = Instant::now();
    let tick = Duration::from_millis(1);
    let mut owed = 0.0;
    let mut tasks = tokio::task::JoinSet::new();
    while start.elapsed() < duration {
        owed += rate(start.elapsed()) * tick.as_secs_f64();
        let settled = start.elapsed() >= settle;
        while owed >= 1.0 {
            owed -= 1.0;
            let svc = svc.clone();
            let (served, shed, rejected) = (served.clone(), shed.clone(), rejected.clone());
            tasks.spawn(async move {
                let t = Instant::now();
                match svc.oneshot(()).await {
                    Ok(()) if settled => served.lock().push(t.elapsed()),
                    Ok(()) => {}
                    Err(e) if watertight_core::is_caused_by::<Overloaded>(&*e) => {
                        shed.fetch_add(1, SeqCst);
                    }
                    Err(_) => {
                        rejected.fetch_add(1, SeqCst);
                    }
                }
            });
        }
        if settled {
            limits.push(limit());
        }
        tokio::time::sleep(tick).await;
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let served = std::mem::take(&mut *served.lock());
    Run {
        served,
        shed_by_server: shed.load(SeqCst),
        rejected: rejected.load(SeqCst),
        limits,
    }
}

/// A `metrics` recorder for one test: installs itself for the closure (in
/// which the layer under test must be built) and reads values back.
///
/// Each [`snapshot`](Self::snapshot) takes the values recorded since the
/// previous one: counters and gauge increments as deltas, gauges set since
/// then as their value.
pub struct Recorder {
    recorder: metrics_util::debugging::DebuggingRecorder,
    snapshotter: metrics_util::debugging::Snapshotter,
}

impl Default for Recorder {
    fn default() -> Self {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        Recorder {
            recorder,
            snapshotter,
        }
    }
}

/// The values of one [`Recorder::snapshot`].
pub struct Values(Vec<(metrics::Key, f64)>);

impl Values {
    /// The value of the metric `name` whose labels include `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .iter()
            .find(|(key, _)| {
                key.name() == name
                    && labels
                        .iter()
                        .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
            })
            .map(|(_, v)| *v)
    }
}

impl Recorder {
    /// Runs `f` with this recorder installed.
    pub fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// The values recorded since the previous snapshot.
    pub fn snapshot(&self) -> Values {
        use metrics_util::debugging::DebugValue;
        Values(
            self.snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| {
                    let v = match value {
                        DebugValue::Counter(c) => c as f64,
                        DebugValue::Gauge(g) => g.into_inner(),
                        DebugValue::Histogram(h) => h.len() as f64,
                    };
                    (key.key().clone(), v)
                })
                .collect(),
        )
    }
}
