//! [`SimBackend`]: a simulated server in virtual time.
//!
//! A backend has a latency distribution, a capacity (how many requests it
//! works on at once; the rest wait in a FIFO queue, so overload shows up as
//! queueing delay, as on a real server) and a [`Script`] of faults over
//! virtual time: error bursts, slowdowns, outages, black holes.
//!
//! Work a backend accepts runs on its own task: a client that gives up (a
//! timeout, a losing hedge) does not free the server, which finishes the
//! request anyway — the way retry storms really hurt.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{oneshot, Semaphore};
use tokio::time::Instant;
use watertight_core::{Endpoint, EndpointId};

/// A latency distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Latency {
    /// Always the same.
    Fixed(Duration),
    /// Uniform between the two bounds.
    Uniform(Duration, Duration),
    /// Log-normal with this median and 99th percentile.
    LogNormal {
        /// The median.
        median: Duration,
        /// The 99th percentile; at least the median.
        p99: Duration,
    },
}

impl Latency {
    /// Log-normal with a 10 ms median and a 30 ms p99, the baseline of the
    /// scenario comparison.
    pub const BASELINE: Latency = Latency::LogNormal {
        median: Duration::from_millis(10),
        p99: Duration::from_millis(30),
    };

    /// Draws one latency.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform(lo, hi) if hi > lo => rng.random_range(lo..=hi),
            Latency::Uniform(lo, _) => lo,
            Latency::LogNormal { median, p99 } => {
                let mu = median.as_secs_f64().max(1e-9).ln();
                let sigma = log_normal_sigma(median, p99);
                Duration::from_secs_f64((mu + sigma * standard_normal(rng)).exp().min(3600.0))
            }
        }
    }

    /// The mean of the distribution.
    pub fn mean(&self) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform(lo, hi) if hi > lo => (lo + hi) / 2,
            Latency::Uniform(lo, _) => lo,
            Latency::LogNormal { median, p99 } => {
                // E[X] = median · exp(σ²/2) for a log-normal.
                let sigma = log_normal_sigma(median, p99);
                median.mul_f64((sigma * sigma / 2.0).exp())
            }
        }
    }
}

/// The σ of a log-normal with this median and 99th percentile (a p99
/// below the median counts as the median).
fn log_normal_sigma(median: Duration, p99: Duration) -> f64 {
    // z(0.99) of the standard normal.
    const Z99: f64 = 2.326_347_874;
    (p99.as_secs_f64().max(median.as_secs_f64()) / median.as_secs_f64().max(1e-9)).ln() / Z99
}

/// One draw of the standard normal distribution (Box–Muller).
pub(crate) fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// What goes wrong with a backend during a [`Phase`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Fault {
    /// A share of requests (`0.0..=1.0`) is answered with `status`.
    Errors {
        /// The share of requests that fail.
        rate: f64,
        /// The status they get (e.g. 503).
        status: u16,
    },
    /// Every latency is multiplied by `factor`.
    Slow {
        /// The latency multiplier.
        factor: f64,
    },
    /// Requests are accepted and never answered (a black hole).
    Hang,
}

impl Fault {
    /// Every request answered with `status`.
    pub const fn outage(status: u16) -> Fault {
        Fault::Errors { rate: 1.0, status }
    }
}

/// A fault over a stretch of virtual time, measured from the simulation's
/// start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Phase {
    /// When the fault starts.
    pub from: Duration,
    /// When it ends (exclusive).
    pub until: Duration,
    /// What goes wrong.
    pub fault: Fault,
}

impl Phase {
    /// `fault` from `from` until `until`.
    pub const fn new(from: Duration, until: Duration, fault: Fault) -> Self {
        Phase { from, until, fault }
    }

    fn covers(&self, t: Duration) -> bool {
        self.from <= t && t < self.until
    }
}

/// The faults of one backend over virtual time; phases may overlap, and all
/// that cover an instant apply.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Script {
    phases: Vec<Phase>,
}

impl Script {
    /// No faults.
    pub fn healthy() -> Self {
        Script::default()
    }

    /// Adds a phase.
    pub fn with(mut self, phase: Phase) -> Self {
        self.phases.push(phase);
        self
    }

    /// The phases.
    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }

    /// What applies at `t`: (error rate and status, latency factor, hang).
    fn at(&self, t: Duration) -> Effect {
        let mut e = Effect {
            error_rate: 0.0,
            status: 503,
            slow: 1.0,
            hang: false,
        };
        for p in self.phases.iter().filter(|p| p.covers(t)) {
            match p.fault {
                Fault::Errors { rate, status } => {
                    // Independent failure sources combine.
                    e.error_rate = 1.0 - (1.0 - e.error_rate) * (1.0 - rate.clamp(0.0, 1.0));
                    e.status = status;
                }
                Fault::Slow { factor } => e.slow *= factor.max(0.0),
                Fault::Hang => e.hang = true,
            }
        }
        e
    }
}

struct Effect {
    error_rate: f64,
    status: u16,
    slow: f64,
    hang: bool,
}

/// A request's attempt counter, shared by its clones: a backend increments it
/// on every arrival, so a report knows how many attempts each request cost.
#[derive(Clone, Debug, Default)]
pub struct AttemptCounter(pub Arc<AtomicU32>);

impl AttemptCounter {
    /// The attempts counted so far.
    pub fn get(&self) -> u32 {
        self.0.load(Relaxed)
    }
}

/// The response extension naming the backend that served a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// The backend's endpoint id.
    pub endpoint: EndpointId,
    /// The backend's zone.
    pub zone: String,
}

/// The error of a [`SimBackend`]: it never fails at the transport level, but
/// a dropped server task would be one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLost;

impl std::fmt::Display for ConnectionLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("simulated connection lost")
    }
}

impl std::error::Error for ConnectionLost {}

/// Configuration of a [`SimBackend`].
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// Its endpoint (id, address, locality, labels).
    pub endpoint: Endpoint,
    /// The latency of a request once it is being worked on.
    pub latency: Latency,
    /// Requests worked on at once; the rest queue.
    pub capacity: usize,
    /// Failed requests take this share of a drawn latency (fail-fast servers
    /// answer errors quickly).
    pub error_latency_factor: f64,
    /// The faults over time.
    pub script: Script,
    /// Seed of this backend's randomness.
    pub seed: u64,
}

impl BackendConfig {
    /// A healthy backend for `endpoint` with the baseline latency and a
    /// capacity of 8.
    pub fn new(endpoint: Endpoint) -> Self {
        BackendConfig {
            endpoint,
            latency: Latency::BASELINE,
            capacity: 8,
            error_latency_factor: 0.2,
            script: Script::healthy(),
            seed: 0,
        }
    }
}

struct State {
    endpoint: Endpoint,
    latency: Latency,
    error_latency_factor: f64,
    script: Script,
    epoch: Instant,
    slots: Arc<Semaphore>,
    rng: Mutex<SmallRng>,
    arrivals: AtomicU64,
    in_flight: AtomicU64,
}

/// A simulated server; see the [module docs](self).
///
/// # Clone
///
/// Clones are the same server: they share its capacity, queue, counters and
/// randomness.
#[derive(Clone)]
pub struct SimBackend {
    state: Arc<State>,
}

impl std::fmt::Debug for SimBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimBackend")
            .field("endpoint", &self.state.endpoint.id)
            .field("arrivals", &self.arrivals())
            .finish_non_exhaustive()
    }
}

impl SimBackend {
    /// A backend whose script is measured from `epoch` (the simulation's start).
    pub fn new(config: BackendConfig, epoch: Instant) -> Self {
        SimBackend {
            state: Arc::new(State {
                endpoint: config.endpoint,
                latency: config.latency,
                error_latency_factor: config.error_latency_factor,
                script: config.script,
                epoch,
                slots: Arc::new(Semaphore::new(config.capacity.max(1))),
                rng: Mutex::new(SmallRng::seed_from_u64(config.seed)),
                arrivals: AtomicU64::new(0),
                in_flight: AtomicU64::new(0),
            }),
        }
    }

    /// Its endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.state.endpoint
    }

    /// Requests it has received (every attempt counts).
    pub fn arrivals(&self) -> u64 {
        self.state.arrivals.load(Relaxed)
    }

    /// Requests it is working on or holding in its queue.
    pub fn in_flight(&self) -> u64 {
        self.state.in_flight.load(Relaxed)
    }
}

impl<B> tower::Service<Request<B>> for SimBackend {
    type Response = Response<()>;
    type Error = ConnectionLost;
    type Future = Pin<Box<dyn Future<Output = Result<Response<()>, ConnectionLost>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectionLost>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let st = self.state.clone();
        st.arrivals.fetch_add(1, Relaxed);
        if let Some(counter) = req.extensions().get::<AttemptCounter>() {
            counter.0.fetch_add(1, Relaxed);
        }
        let effect = st
            .script
            .at(Instant::now().saturating_duration_since(st.epoch));
        if effect.hang {
            return Box::pin(futures_util::future::pending());
        }
        let (fail, latency) = {
            let mut rng = st.rng.lock();
            let fail = effect.error_rate > 0.0 && rng.random_bool(effect.error_rate.min(1.0));
            let mut latency = st.latency.sample(&mut *rng).mul_f64(effect.slow);
            if fail {
                latency = latency.mul_f64(st.error_latency_factor);
            }
            (fail, latency)
        };
        let status = if fail { effect.status } else { 200 };
        let (tx, rx) = oneshot::channel();
        st.in_flight.fetch_add(1, Relaxed);
        tokio::spawn(async move {
            // A closed semaphore never happens: it lives as long as the state.
            let permit = st.slots.clone().acquire_owned().await;
            tokio::time::sleep(latency).await;
            drop(permit);
            st.in_flight.fetch_sub(1, Relaxed);
            let mut res = Response::new(());
            *res.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            res.extensions_mut().insert(Served {
                endpoint: st.endpoint.id.clone(),
                zone: st.endpoint.locality.zone.clone(),
            });
            // The client may have given up; the work is done either way.
            let _ = tx.send(res);
        });
        Box::pin(async move { rx.await.map_err(|_| ConnectionLost) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;
    use watertight_core::Locality;

    fn endpoint() -> Endpoint {
        Endpoint::new("10.0.0.1:80".parse().unwrap()).with_locality(Locality::zone("a"))
    }

    #[test]
    fn log_normal_matches_its_median_and_p99() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut draws: Vec<Duration> = (0..100_000)
            .map(|_| Latency::BASELINE.sample(&mut rng))
            .collect();
        draws.sort();
        let median = draws[50_000].as_secs_f64() * 1e3;
        let p99 = draws[99_000].as_secs_f64() * 1e3;
        assert!((median - 10.0).abs() < 0.3, "median {median}");
        assert!((p99 - 30.0).abs() < 1.5, "p99 {p99}");
    }

    #[test]
    fn mean_is_the_mean_of_the_draws() {
        let mut rng = SmallRng::seed_from_u64(2);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        for latency in [
            Latency::BASELINE,
            Latency::Uniform(Duration::from_millis(10), Duration::from_millis(30)),
            Latency::Fixed(Duration::from_millis(7)),
        ] {
            let drawn = (0..100_000)
                .map(|_| ms(latency.sample(&mut rng)))
                .sum::<f64>()
                / 100_000.0;
            let mean = ms(latency.mean());
            assert!(
                (drawn - mean).abs() < mean * 0.01,
                "{latency:?}: {drawn} vs {mean}"
            );
        }
        // A reversed range draws its lower bound.
        let reversed = Latency::Uniform(Duration::from_millis(30), Duration::from_millis(10));
        assert_eq!(reversed.mean(), reversed.sample(&mut rng));
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_queues_the_excess() {
        let mut cfg = BackendConfig::new(endpoint());
        cfg.latency = Latency::Fixed(Duration::from_millis(10));
        cfg.capacity = 2;
        let b = SimBackend::new(cfg, Instant::now());
        let start = Instant::now();
        let calls: Vec<_> = (0..4)
            .map(|_| b.clone().oneshot(Request::new(())))
            .collect();
        let done = futures_util::future::join_all(calls).await;
        assert!(done.iter().all(|r| r.as_ref().unwrap().status() == 200));
        // Two waves of 10 ms.
        assert_eq!(start.elapsed(), Duration::from_millis(20));
        assert_eq!(b.arrivals(), 4);
        assert_eq!(b.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn script_phases_apply_in_their_window() {
        let mut cfg = BackendConfig::new(endpoint());
        cfg.latency = Latency::Fixed(Duration::from_millis(10));
        cfg.script = Script::healthy()
            .with(Phase::new(
                Duration::from_secs(1),
                Duration::from_secs(2),
                Fault::outage(503),
            ))
            .with(Phase::new(
                Duration::from_secs(3),
                Duration::from_secs(4),
                Fault::Slow { factor: 5.0 },
            ))
            .with(Phase::new(
                Duration::from_secs(5),
                Duration::from_secs(6),
                Fault::Hang,
            ));
        let epoch = Instant::now();
        let b = SimBackend::new(cfg, epoch);
        let ok = b.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.extensions().get::<Served>().unwrap().zone, "a");

        tokio::time::sleep_until(epoch + Duration::from_millis(1500)).await;
        let t = Instant::now();
        let failed = b.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(failed.status(), 503);
        assert_eq!(
            t.elapsed(),
            Duration::from_millis(2),
            "errors answer at a fifth of the latency"
        );

        tokio::time::sleep_until(epoch + Duration::from_millis(3500)).await;
        let t = Instant::now();
        b.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(t.elapsed(), Duration::from_millis(50));

        tokio::time::sleep_until(epoch + Duration::from_millis(5500)).await;
        let hung =
            tokio::time::timeout(Duration::from_secs(60), b.clone().oneshot(Request::new(())))
                .await;
        assert!(hung.is_err(), "a black hole never answers");
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_counted_across_clones() {
        let b = SimBackend::new(BackendConfig::new(endpoint()), Instant::now());
        let counter = AttemptCounter::default();
        let mut req = Request::new(());
        req.extensions_mut().insert(counter.clone());
        b.clone().oneshot(req.clone()).await.unwrap();
        b.clone().oneshot(req).await.unwrap();
        assert_eq!(counter.get(), 2);
    }
}
