use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use tokio::time::Instant;
use tower_layer::Layer;

use super::config::{HedgeBuilder, HedgeConfig, HedgeDelay};
use super::latency::LatencyTracker;
use super::service::Hedge;
use crate::budget::{AnyBudget, Budget};
use crate::error::ConfigError;
use crate::event::{self, Event, Listener};
use crate::parts::Built;
use crate::policy::StandardPolicy;

/// Wraps services in a [`Hedge`].
///
/// # Clone
///
/// A layer holds one budget, one latency histogram and one set of counters
/// (in an `Arc`), shared by every service it wraps, their clones and the
/// layer's clones.
pub struct HedgeLayer<B = AnyBudget, P = StandardPolicy> {
    shared: Arc<HedgeShared<B, P>>,
}

impl<B, P> Clone for HedgeLayer<B, P> {
    fn clone(&self) -> Self {
        HedgeLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<B: fmt::Debug, P: fmt::Debug> fmt::Debug for HedgeLayer<B, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer")
            .field("config", &self.shared.config)
            .field("budget", &self.shared.budget)
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

impl Default for HedgeLayer {
    fn default() -> Self {
        HedgeLayer::new()
    }
}

impl HedgeLayer {
    /// A layer with the defaults of [`HedgeConfig`].
    pub fn new() -> Self {
        HedgeBuilder::new().build().expect("the defaults are valid")
    }

    /// A builder starting from the defaults.
    pub fn builder() -> HedgeBuilder {
        HedgeBuilder::new()
    }

    /// A layer from a configuration, with the default policy.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field; see
    /// [`HedgeConfig::validate`].
    pub fn from_config(config: HedgeConfig) -> Result<Self, ConfigError> {
        HedgeBuilder::new().config(config).build()
    }
}

impl<B: Budget, P: Send + Sync + 'static> HedgeLayer<B, P> {
    pub(crate) fn from_parts(parts: Built<HedgeConfig, B, P>) -> Self {
        HedgeLayer {
            shared: Arc::new(HedgeShared::new(parts)),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HedgeConfig {
        &self.shared.config
    }

    /// The budget.
    pub fn budget(&self) -> &Arc<B> {
        &self.shared.budget
    }

    /// A handle observing this layer.
    pub fn handle(&self) -> HedgeHandle {
        handle_of(&self.shared)
    }
}

pub(crate) fn handle_of<B: Budget, P: Send + Sync + 'static>(
    shared: &Arc<HedgeShared<B, P>>,
) -> HedgeHandle {
    HedgeHandle {
        inner: shared.clone(),
    }
}

impl<S, B, P> Layer<S> for HedgeLayer<B, P> {
    type Service = Hedge<S, B, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge::from_parts(inner, self.shared.clone())
    }
}

pub(crate) enum Trigger {
    Percentile(Box<LatencyTracker>),
    Fixed(Duration),
}

pub(crate) struct HedgeShared<B, P> {
    pub(crate) name: Arc<str>,
    pub(crate) config: HedgeConfig,
    pub(crate) budget: Arc<B>,
    pub(crate) policy: P,
    listener: Option<Listener>,
    trigger: Trigger,
    requests: AtomicU64,
    sent: AtomicU64,
    won: AtomicU64,
    refused: AtomicU64,
    metrics: Metrics,
}

struct Metrics {
    requests: Counter,
    sent: Counter,
    won: Counter,
    refused: Counter,
}

impl<B: Budget, P> HedgeShared<B, P> {
    fn new(parts: Built<HedgeConfig, B, P>) -> Self {
        let Built {
            config,
            budget,
            policy,
            listener,
        } = parts;
        let label = || [("name", config.name.clone())];
        let trigger = match config.delay {
            HedgeDelay::Percentile {
                max_extra_load,
                min_delay,
                max_latency,
                min_samples,
                period,
            } => Trigger::Percentile(Box::new(LatencyTracker::new(
                1.0 - max_extra_load,
                min_delay,
                max_latency,
                min_samples,
                period,
                metrics::gauge!("watertight_hedge_delay_seconds", &label()),
            ))),
            HedgeDelay::Fixed { delay } => {
                metrics::gauge!("watertight_hedge_delay_seconds", &label())
                    .set(delay.as_secs_f64());
                Trigger::Fixed(delay)
            }
        };
        HedgeShared {
            name: config.name.as_str().into(),
            metrics: Metrics {
                requests: metrics::counter!("watertight_hedge_requests_total", &label()),
                sent: metrics::counter!("watertight_hedge_sent_total", &label()),
                won: metrics::counter!("watertight_hedge_won_total", &label()),
                refused: metrics::counter!("watertight_hedge_budget_exhausted_total", &label()),
            },
            config,
            budget,
            policy,
            listener,
            trigger,
            requests: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            won: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    pub(crate) fn on_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.metrics.requests.increment(1);
    }

    /// The hedge delay for a request starting `now`.
    pub(crate) fn delay(&self, now: Instant) -> Option<Duration> {
        match &self.trigger {
            Trigger::Percentile(t) => t.delay(now),
            Trigger::Fixed(d) => Some(*d),
        }
    }

    /// Records a successful attempt's latency (or a cancelled one's time so
    /// far, a lower bound that keeps the tail in the histogram).
    pub(crate) fn record_latency(&self, now: Instant, latency: Duration) {
        if let Trigger::Percentile(t) = &self.trigger {
            t.record(now, latency);
        }
    }

    pub(crate) fn on_sent(&self, attempt: u32) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.metrics.sent.increment(1);
        tracing::debug!(target: "watertight_retry", name = %self.name, attempt, "hedge sent");
        self.emit(|name| Event::HedgeSent(event::Hedge { name, attempt }));
    }

    pub(crate) fn on_won(&self, attempt: u32) {
        self.won.fetch_add(1, Ordering::Relaxed);
        self.metrics.won.increment(1);
        tracing::debug!(target: "watertight_retry", name = %self.name, attempt, "hedge won");
        self.emit(|name| Event::HedgeWon(event::Hedge { name, attempt }));
    }

    pub(crate) fn on_refused(&self, attempt: u32) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.metrics.refused.increment(1);
        tracing::debug!(
            target: "watertight_retry",
            name = %self.name,
            attempt,
            "hedge refused by the budget"
        );
        self.emit(|name| Event::HedgeRefused(event::Hedge { name, attempt }));
    }

    fn emit(&self, make: impl FnOnce(Arc<str>) -> Event) {
        if let Some(listener) = &self.listener {
            listener(&make(self.name.clone()));
        }
    }
}

pub(crate) trait ObserveHedge: Send + Sync {
    fn name(&self) -> &str;
    fn snapshot(&self) -> HedgeSnapshot;
}

impl<B: Budget, P: Send + Sync + 'static> ObserveHedge for HedgeShared<B, P> {
    fn name(&self) -> &str {
        &self.name
    }

    fn snapshot(&self) -> HedgeSnapshot {
        HedgeSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            hedges_sent: self.sent.load(Ordering::Relaxed),
            hedges_won: self.won.load(Ordering::Relaxed),
            budget_exhausted: self.refused.load(Ordering::Relaxed),
            delay: self.delay(Instant::now()),
            budget_remaining: self.budget.remaining(),
        }
    }
}

/// Observes one hedging layer.
///
/// # Clone
///
/// Cheap: clones share the layer's state (an `Arc`).
#[derive(Clone)]
pub struct HedgeHandle {
    inner: Arc<dyn ObserveHedge>,
}

impl HedgeHandle {
    /// The layer's name.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// The layer's counters at this instant.
    pub fn snapshot(&self) -> HedgeSnapshot {
        self.inner.snapshot()
    }
}

impl fmt::Debug for HedgeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeHandle")
            .field("name", &self.name())
            .finish()
    }
}

/// A hedging layer's counters, since it was built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HedgeSnapshot {
    /// Requests that entered the layer.
    pub requests: u64,
    /// Hedges sent.
    pub hedges_sent: u64,
    /// Requests whose answer came from a hedge.
    pub hedges_won: u64,
    /// Hedges the budget refused.
    pub budget_exhausted: u64,
    /// The delay after which a request starting now would be hedged;
    /// `None` while the histogram has too little data or its percentile is
    /// at the top.
    pub delay: Option<Duration>,
    /// What the budget would grant now.
    pub budget_remaining: u64,
}
