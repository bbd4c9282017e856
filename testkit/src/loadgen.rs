//! [`LoadGen`]: open-loop load in virtual time.
//!
//! Requests arrive as a Poisson process at a rate that may change over time
//! ([`RateProfile`]), whatever the service under test does: a slow or
//! back-pressuring stack does not slow the arrivals down, as real users do
//! not (closed-loop generators hide overload; see "Open Versus Closed: A
//! Cautionary Tale", Schroeder et al., NSDI 2006). Every request is recorded:
//! outcome, latency, attempts, and the endpoint and zone that served it.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use watertight_core::{BoxError, EndpointId};

use crate::backend::{AttemptCounter, Served};

/// Requests per second over time: piecewise constant.
#[derive(Clone, Debug, PartialEq)]
pub struct RateProfile {
    /// `(from, rps)`, sorted by `from`; the first starts at zero.
    steps: Vec<(Duration, f64)>,
}

impl RateProfile {
    /// `rps` requests per second throughout.
    pub fn constant(rps: f64) -> Self {
        RateProfile {
            steps: vec![(Duration::ZERO, rps.max(0.0))],
        }
    }

    /// From `at` on, `rps` requests per second.
    pub fn then_at(mut self, at: Duration, rps: f64) -> Self {
        self.steps.push((at, rps.max(0.0)));
        self.steps.sort_by_key(|(from, _)| *from);
        self
    }

    /// The rate at `t`.
    pub fn at(&self, t: Duration) -> f64 {
        self.steps
            .iter()
            .take_while(|(from, _)| *from <= t)
            .last()
            .map_or(0.0, |(_, r)| *r)
    }

    /// The next instant after `t` where the rate changes.
    fn next_change(&self, t: Duration) -> Option<Duration> {
        self.steps
            .iter()
            .map(|(from, _)| *from)
            .find(|from| *from > t)
    }

    /// Scales every rate by `factor`.
    pub fn scaled(mut self, factor: f64) -> Self {
        for (_, r) in &mut self.steps {
            *r *= factor;
        }
        self
    }
}

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A response with a status below 400.
    Success,
    /// A response with this status (400 or more).
    Status(u16),
    /// The stack returned an error (open breaker, exhausted budget, timeout…).
    Error,
    /// No answer within the generator's give-up time.
    GaveUp,
}

impl Outcome {
    /// Whether the request succeeded.
    pub fn is_success(self) -> bool {
        self == Outcome::Success
    }
}

/// One request, as the generator saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The client (by zone) that sent it.
    pub client_zone: Arc<str>,
    /// When it was sent, from the simulation's start.
    pub start: Duration,
    /// How long it took to end.
    pub latency: Duration,
    /// How it ended.
    pub outcome: Outcome,
    /// How many attempts reached a backend.
    pub attempts: u32,
    /// The endpoint whose response the client got, if any.
    pub served_by: Option<EndpointId>,
    /// That endpoint's zone.
    pub served_zone: Option<String>,
}

type MakeRequest = Arc<dyn Fn(u64) -> Request<()> + Send + Sync>;

/// An open-loop load generator; see the [module docs](self).
#[derive(Clone)]
pub struct LoadGen {
    rate: RateProfile,
    duration: Duration,
    give_up_after: Duration,
    seed: u64,
    client_zone: Arc<str>,
    make_request: MakeRequest,
}

impl std::fmt::Debug for LoadGen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadGen")
            .field("rate", &self.rate)
            .field("duration", &self.duration)
            .field("seed", &self.seed)
            .field("client_zone", &self.client_zone)
            .finish_non_exhaustive()
    }
}

impl LoadGen {
    /// Load at `rate` for `duration`, giving up on a request after 30 s.
    pub fn new(rate: RateProfile, duration: Duration) -> Self {
        LoadGen {
            rate,
            duration,
            give_up_after: Duration::from_secs(30),
            seed: 0,
            client_zone: Arc::from(""),
            make_request: Arc::new(|_| Request::new(())),
        }
    }

    /// Seeds the arrival times.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// How long a request may take before the generator records it as
    /// [`Outcome::GaveUp`] (and drops it).
    pub fn give_up_after(mut self, d: Duration) -> Self {
        self.give_up_after = d;
        self
    }

    /// The zone of the client the records are attributed to.
    pub fn client_zone(mut self, zone: &str) -> Self {
        self.client_zone = Arc::from(zone);
        self
    }

    /// How to build request number `n` (default: an empty `GET /`).
    pub fn request(mut self, f: impl Fn(u64) -> Request<()> + Send + Sync + 'static) -> Self {
        self.make_request = Arc::new(f);
        self
    }

    /// The arrival times, from the simulation's start.
    pub fn arrivals(&self) -> Vec<Duration> {
        let mut rng = SmallRng::seed_from_u64(self.seed);
        let mut out = Vec::new();
        let mut t = Duration::ZERO;
        while t < self.duration {
            let rate = self.rate.at(t);
            if rate <= 0.0 {
                match self.rate.next_change(t) {
                    Some(next) => {
                        t = next;
                        continue;
                    }
                    None => break,
                }
            }
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            let gap = Duration::from_secs_f64(-u.ln() / rate);
            // A rate change resets the clock of the memoryless process.
            match self.rate.next_change(t) {
                Some(next) if t + gap >= next => t = next,
                _ => {
                    t += gap;
                    if t < self.duration {
                        out.push(t);
                    }
                }
            }
        }
        out
    }

    /// Sends the load to `service`, measuring from `epoch` (the simulation's
    /// start), and returns one record per request once every request has
    /// ended. Run it inside a runtime with paused time.
    pub async fn run<S>(&self, service: S, epoch: Instant) -> Vec<Record>
    where
        S: Service<Request<()>, Response = Response<()>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
    {
        let records = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        for (n, at) in self.arrivals().into_iter().enumerate() {
            tokio::time::sleep_until(epoch + at).await;
            let mut req = (self.make_request)(n as u64);
            let attempts = AttemptCounter::default();
            req.extensions_mut().insert(attempts.clone());
            let call = service.clone().oneshot(req);
            let records = records.clone();
            let give_up = self.give_up_after;
            let zone = self.client_zone.clone();
            tasks.spawn(async move {
                let sent = Instant::now();
                let result = tokio::time::timeout(give_up, call).await;
                let (outcome, served) = match result {
                    Err(_) => (Outcome::GaveUp, None),
                    Ok(Err(_)) => (Outcome::Error, None),
                    Ok(Ok(res)) => {
                        let served = res.extensions().get::<Served>().cloned();
                        let status = res.status().as_u16();
                        (
                            if status < 400 {
                                Outcome::Success
                            } else {
                                Outcome::Status(status)
                            },
                            served,
                        )
                    }
                };
                records.lock().push(Record {
                    client_zone: zone,
                    start: sent.saturating_duration_since(epoch),
                    latency: sent.elapsed(),
                    outcome,
                    attempts: attempts.get(),
                    served_by: served.as_ref().map(|s| s.endpoint.clone()),
                    served_zone: served.map(|s| s.zone),
                });
            });
            // Reap finished tasks as we go so the set stays small.
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
        let mut records = std::mem::take(&mut *records.lock());
        records.sort_by_key(|r| r.start);
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_arrivals_follow_the_profile() {
        let gen = LoadGen::new(
            RateProfile::constant(1000.0).then_at(Duration::from_secs(10), 100.0),
            Duration::from_secs(20),
        )
        .seed(3);
        let arrivals = gen.arrivals();
        let first = arrivals
            .iter()
            .filter(|t| **t < Duration::from_secs(10))
            .count();
        let second = arrivals.len() - first;
        assert!((first as f64 - 10_000.0).abs() < 300.0, "{first}");
        assert!((second as f64 - 1_000.0).abs() < 100.0, "{second}");
        assert!(arrivals.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(arrivals, gen.arrivals(), "same seed, same arrivals");
    }

    #[test]
    fn zero_rate_stretches_send_nothing() {
        let gen = LoadGen::new(
            RateProfile::constant(0.0).then_at(Duration::from_secs(5), 10.0),
            Duration::from_secs(6),
        );
        assert!(gen.arrivals().iter().all(|t| *t >= Duration::from_secs(5)));
        assert!(!gen.arrivals().is_empty());
    }
}
