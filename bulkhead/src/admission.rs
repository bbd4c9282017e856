//! [`Admission`](crate::Admission)'s configuration, shared state and handle.
//!
//! # Algorithm
//!
//! Client-side adaptive throttling from Google's *Site Reliability
//! Engineering* ("Handling Overload", ch. 21). Over a sliding window the
//! client counts `requests` (every request the application made, including
//! those this layer rejected) and `accepts` (requests the backend accepted),
//! and rejects a new request locally, without sending it, with probability
//!
//! ```text
//! p = min(max_probability, max(0, (requests − K × accepts) / (requests + 1)))
//! ```
//!
//! While the backend accepts more than `1/K` of what it gets, nothing is
//! rejected; beyond, the client sheds locally the share the backend would
//! reject anyway, so a backend in trouble is not also buried under requests
//! it will refuse, and retries of rejected requests (which count as
//! requests) cannot grow into a storm. `K = 2` lets the backend see about
//! twice what it accepts, so it always has traffic to recover with.
//!
//! "Accepted" is read through the layer's [`Classify`](watertight_core::Classify):
//! a success, or a failure that is not retryable (the backend did take the
//! request and answered, say, `500`), is an accept; a retryable failure (a
//! `503`, a `429`, a timeout, a refused connection) is a rejection; an
//! [`Ignored`](watertight_core::ResponseClass::Ignored) result and a
//! cancelled call count nowhere.
//!
//! Envoy's `admission_control` filter uses a variant that divides accepts by
//! a success-rate threshold instead of multiplying by `K`; the default
//! `max_probability` of 0.8 is that filter's.
//!
//! The window should count what the backend did: put this layer *inside*
//! local limiters such as an [`AdaptiveConcurrency`](crate::AdaptiveConcurrency)
//! (closer to the backend), or classify their
//! [`Full`](crate::error::Full) as `Ignored`, or their local rejections
//! count as the backend's refusals.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Label};
use rand::rngs::SmallRng;
use rand::Rng;
use tokio::time::Instant;
use watertight_core::config;
use watertight_core::window::{Outcome, TimeWindow};
use watertight_core::{ErrorsAsFailures, ResponseClass};

use crate::error::check::{self, COMPONENT};
use crate::error::{ConfigError, Throttled};
use crate::event::{self, Event, Listener};
use crate::layer::AdmissionLayer;
use crate::limiter::TARGET;

/// Buckets of the sliding window.
const BUCKETS: usize = 30;

/// An [`Admission`](crate::Admission)'s configuration.
///
/// | field | default |
/// |---|---|
/// | `name` | `"admission"` |
/// | `k` | 2.0 |
/// | `window` | 30 s |
/// | `max_probability` | 0.8 |
/// | `retry_after` | 1 s |
/// | `seed` | `None` (entropy) |
///
/// With feature `serde` (TOML shown, every field optional), validated on
/// the way in:
///
/// ```toml
/// name = "inventory"
/// k = 1.5
/// window = "1m"
/// max_probability = 0.9
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct AdmissionConfig {
    /// The instance name: the `name` label of its metrics. Not empty.
    pub name: String,
    /// The multiplier of accepts, at least 1 (lower sheds more eagerly).
    pub k: f64,
    /// The sliding window requests and accepts are counted over; at least
    /// 30 ns (it has 30 buckets).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub window: Duration,
    /// The highest rejection probability, in `(0, 1]`.
    pub max_probability: f64,
    /// The hint rejections carry.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub retry_after: Duration,
    /// Seed of the rejection draws; `None` seeds from entropy.
    pub seed: Option<u64>,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            name: "admission".to_owned(),
            k: 2.0,
            window: Duration::from_secs(30),
            max_probability: 0.8,
            retry_after: Duration::from_secs(1),
            seed: None,
        }
    }
}

impl AdmissionConfig {
    /// Checks every rule: the name is not empty, `k` is a number of at
    /// least 1, `window` is at least 30 ns, `max_probability` is in
    /// `(0, 1]`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that breaks a rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        config::name(COMPONENT, &self.name)?;
        config::within_range(COMPONENT, "k", self.k, 1.0, 1e6)?;
        if self.window.as_nanos() < BUCKETS as u128 {
            return Err(check::invalid(
                "window",
                format!("must be at least {BUCKETS} ns, got {:?}", self.window),
            ));
        }
        config::fraction(COMPONENT, "max_probability", self.max_probability)
    }
}

validated_serde!(AdmissionConfig);

/// Builds an [`AdmissionLayer`]; see [`AdmissionConfig`] for every field
/// and its default.
pub struct AdmissionBuilder<C = ErrorsAsFailures> {
    config: AdmissionConfig,
    classify: C,
    listener: Option<Listener>,
}

impl<C: fmt::Debug> fmt::Debug for AdmissionBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmissionBuilder")
            .field("config", &self.config)
            .field("classify", &self.classify)
            .field("on_event", &self.listener.is_some())
            .finish()
    }
}

impl Default for AdmissionBuilder {
    fn default() -> Self {
        AdmissionBuilder::new()
    }
}

impl AdmissionBuilder {
    /// A builder with the defaults of [`AdmissionConfig`] and
    /// [`ErrorsAsFailures`].
    pub fn new() -> Self {
        AdmissionBuilder {
            config: AdmissionConfig::default(),
            classify: ErrorsAsFailures,
            listener: None,
        }
    }
}

impl<C> AdmissionBuilder<C> {
    /// Starts from `config` instead of the defaults (later setters still
    /// apply).
    pub fn config(mut self, config: AdmissionConfig) -> Self {
        self.config = config;
        self
    }

    /// The instance name (default `admission`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// The multiplier of accepts (default 2).
    pub fn k(mut self, k: f64) -> Self {
        self.config.k = k;
        self
    }

    /// The sliding window (default 30 s).
    pub fn window(mut self, window: Duration) -> Self {
        self.config.window = window;
        self
    }

    /// The highest rejection probability (default 0.8).
    pub fn max_probability(mut self, p: f64) -> Self {
        self.config.max_probability = p;
        self
    }

    /// The hint rejections carry (default 1 s).
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.config.retry_after = retry_after;
        self
    }

    /// Seeds the rejection draws, for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// How results are judged (default [`ErrorsAsFailures`]); see the
    /// [module docs](self). Cloned into every response future.
    pub fn classify<C2>(self, classify: C2) -> AdmissionBuilder<C2> {
        AdmissionBuilder {
            config: self.config,
            classify,
            listener: self.listener,
        }
    }

    /// Calls `listener` with every [`Event`]; see [`event`].
    pub fn on_event<F>(mut self, listener: F) -> Self
    where
        F: Fn(&Event) + Send + Sync + 'static,
    {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Validates the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field; see
    /// [`AdmissionConfig::validate`].
    pub fn build(self) -> Result<AdmissionLayer<C>, ConfigError> {
        self.config.validate()?;
        Ok(AdmissionLayer::from_parts(
            self.config,
            self.classify,
            self.listener,
        ))
    }
}

struct Metrics {
    throttled: Counter,
    accepted: Counter,
    refused: Counter,
    probability: Gauge,
}

/// The sliding window, the draws and the counters of one admission layer.
pub(crate) struct Throttle {
    window: TimeWindow,
    k: f64,
    max_probability: f64,
    rng: parking_lot::Mutex<SmallRng>,
    pub(crate) name: Arc<str>,
    retry_after: Duration,
    throttled: AtomicU64,
    /// The probability last published to the gauge, as `f64` bits.
    published: AtomicU64,
    metrics: Metrics,
    listener: Option<Listener>,
}

impl fmt::Debug for Throttle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("name", &self.name)
            .field("k", &self.k)
            .field("max_probability", &self.max_probability)
            .finish_non_exhaustive()
    }
}

impl Throttle {
    pub(crate) fn new(config: &AdmissionConfig, listener: Option<Listener>) -> Self {
        let labels = vec![Label::new("name", config.name.clone())];
        let outcome = |o: &'static str| {
            let mut l = labels.clone();
            l.push(Label::new("outcome", o));
            metrics::counter!("watertight_admission_requests_total", l)
        };
        let metrics = Metrics {
            throttled: outcome("throttled"),
            accepted: outcome("accepted"),
            refused: outcome("refused"),
            probability: metrics::gauge!("watertight_admission_rejection_probability", labels),
        };
        metrics.probability.set(0.0);
        Throttle {
            window: TimeWindow::new(config.window, BUCKETS, Instant::now()),
            k: config.k,
            max_probability: config.max_probability,
            rng: parking_lot::Mutex::new(crate::limit::rng(config.seed)),
            name: Arc::from(config.name.as_str()),
            retry_after: config.retry_after,
            throttled: AtomicU64::new(0),
            published: AtomicU64::new(0f64.to_bits()),
            metrics,
            listener,
        }
    }

    /// `(requests, accepts)` over the window at `now`.
    fn counts(&self, now: Instant) -> (u64, u64) {
        let s = self.window.snapshot(now);
        (s.calls, s.calls - s.failures)
    }

    fn probability_at(&self, now: Instant) -> f64 {
        let (requests, accepts) = self.counts(now);
        let (r, a) = (requests as f64, accepts as f64);
        ((r - self.k * a) / (r + 1.0)).clamp(0.0, self.max_probability)
    }

    fn publish(&self, p: f64) {
        let last = f64::from_bits(self.published.load(Relaxed));
        if (p - last).abs() >= 0.01 || (p == 0.0) != (last == 0.0) {
            self.published.store(p.to_bits(), Relaxed);
            self.metrics.probability.set(p);
        }
    }

    /// Decides about one request: `Err` rejects it locally (and counts it
    /// as a request that was not accepted).
    #[inline]
    pub(crate) fn admit(&self) -> Result<(), Throttled> {
        let now = Instant::now();
        let p = self.probability_at(now);
        self.publish(p);
        if p <= 0.0 || self.rng.lock().random::<f64>() >= p {
            return Ok(());
        }
        self.window.record(now, Outcome::Failure);
        self.throttled.fetch_add(1, Relaxed);
        self.metrics.throttled.increment(1);
        tracing::trace!(target: TARGET, name = %self.name, probability = p, "throttled");
        if let Some(l) = &self.listener {
            l(&Event::Throttled(event::Throttled {
                name: self.name.clone(),
                probability: p,
            }));
        }
        Err(Throttled::new(p, self.retry_after))
    }

    /// Counts the result of a request that was sent.
    #[inline]
    pub(crate) fn record(&self, class: ResponseClass) {
        let outcome = match class {
            ResponseClass::Ignored => return,
            ResponseClass::Failure { retryable: true } => {
                self.metrics.refused.increment(1);
                Outcome::Failure
            }
            _ => {
                self.metrics.accepted.increment(1);
                Outcome::Success
            }
        };
        self.window.record(Instant::now(), outcome);
    }
}

/// Observes one admission layer.
///
/// # Clone
///
/// Cheap: clones share the state (an `Arc`), as do the services it came
/// from.
#[derive(Clone, Debug)]
pub struct AdmissionHandle {
    pub(crate) throttle: Arc<Throttle>,
}

impl AdmissionHandle {
    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.throttle.name
    }

    /// The rejection probability a request would meet now.
    pub fn probability(&self) -> f64 {
        self.throttle.probability_at(Instant::now())
    }

    /// Requests over the window (including those rejected locally).
    pub fn requests(&self) -> u64 {
        self.throttle.counts(Instant::now()).0
    }

    /// Requests the backend accepted over the window.
    pub fn accepts(&self) -> u64 {
        self.throttle.counts(Instant::now()).1
    }

    /// Requests rejected locally since the layer was built.
    pub fn throttled(&self) -> u64 {
        self.throttle.throttled.load(Relaxed)
    }
}
