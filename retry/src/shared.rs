//! State shared by a retry layer and every service it wraps.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::budget::{Budget, Cause};
use crate::config::Config;
use crate::event::{self, Event, Listener};
use crate::handle::{Observe, Snapshot};
use crate::mark::Reason;
use crate::parts::Built;

pub(crate) struct Shared<B, P> {
    pub(crate) name: Arc<str>,
    pub(crate) config: Config,
    pub(crate) budget: Arc<B>,
    pub(crate) policy: P,
    pub(crate) listener: Option<Listener>,
    pub(crate) enabled: AtomicBool,
    rng: Mutex<SmallRng>,
    requests: AtomicU64,
    retries: AtomicU64,
    budget_exhausted: AtomicU64,
    gave_up: [AtomicU64; Reason::ALL.len()],
    pub(crate) metrics: Metrics,
}

pub(crate) struct Metrics {
    pub(crate) requests: Counter,
    pub(crate) attempts: Counter,
    retries: Counter,
    budget_exhausted: Counter,
    gave_up: [Counter; Reason::ALL.len()],
}

impl Metrics {
    fn new(name: &str) -> Self {
        let label = || [("name", name.to_owned())];
        Metrics {
            requests: metrics::counter!("watertight_retry_requests_total", &label()),
            attempts: metrics::counter!("watertight_retry_attempts_total", &label()),
            retries: metrics::counter!("watertight_retry_retries_total", &label()),
            budget_exhausted: metrics::counter!(
                "watertight_retry_budget_exhausted_total",
                &label()
            ),
            gave_up: Reason::ALL.map(|r| {
                metrics::counter!(
                    "watertight_retry_gave_up_total",
                    "name" => name.to_owned(),
                    "reason" => r.as_str()
                )
            }),
        }
    }
}

impl<B: Budget, P> Shared<B, P> {
    pub(crate) fn new(parts: Built<Config, B, P>) -> Self {
        let Built {
            config,
            budget,
            policy,
            listener,
        } = parts;
        let rng = match config.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        };
        Shared {
            name: config.name.as_str().into(),
            metrics: Metrics::new(&config.name),
            config,
            budget,
            policy,
            listener,
            enabled: AtomicBool::new(true),
            rng: Mutex::new(rng),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            budget_exhausted: AtomicU64::new(0),
            gave_up: Default::default(),
        }
    }

    #[inline]
    pub(crate) fn on_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.metrics.requests.increment(1);
        self.metrics.attempts.increment(1);
    }

    /// The backoff before retry `n` (0-based), given the previous delay.
    pub(crate) fn backoff(&self, n: u32, prev: Duration) -> Duration {
        self.config.backoff.delay(n, prev, &mut *self.rng.lock())
    }

    pub(crate) fn on_retry(
        &self,
        attempt: u32,
        delay: Duration,
        cause: Cause,
        server_delay: Option<Duration>,
    ) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.metrics.retries.increment(1);
        self.metrics.attempts.increment(1);
        tracing::debug!(
            target: "watertight_retry",
            name = %self.name,
            attempt,
            ?delay,
            ?cause,
            ?server_delay,
            "retrying"
        );
        self.emit(|name| {
            Event::Retry(event::Retry {
                name,
                attempt,
                delay,
                cause,
                server_delay,
            })
        });
    }

    pub(crate) fn on_give_up(&self, reason: Reason, attempts: u32) {
        self.gave_up[reason.index()].fetch_add(1, Ordering::Relaxed);
        self.metrics.gave_up[reason.index()].increment(1);
        if reason == Reason::Budget {
            self.budget_exhausted.fetch_add(1, Ordering::Relaxed);
            self.metrics.budget_exhausted.increment(1);
            tracing::info!(
                target: "watertight_retry",
                name = %self.name,
                attempts,
                remaining = self.budget.remaining(),
                "retry budget exhausted"
            );
        } else {
            tracing::debug!(
                target: "watertight_retry",
                name = %self.name,
                attempts,
                %reason,
                "gave up"
            );
        }
        self.emit(|name| {
            Event::GaveUp(event::GaveUp {
                name,
                reason,
                attempts,
            })
        });
    }

    fn emit(&self, make: impl FnOnce(Arc<str>) -> Event) {
        if let Some(listener) = &self.listener {
            listener(&make(self.name.clone()));
        }
    }
}

impl<B: Budget, P: Send + Sync + 'static> Observe for Shared<B, P> {
    fn name(&self) -> &str {
        &self.name
    }

    fn snapshot(&self) -> Snapshot {
        let requests = self.requests.load(Ordering::Relaxed);
        let retries = self.retries.load(Ordering::Relaxed);
        Snapshot {
            requests,
            retries,
            attempts: requests + retries,
            budget_exhausted: self.budget_exhausted.load(Ordering::Relaxed),
            gave_up: Reason::ALL.map(|r| (r, self.gave_up[r.index()].load(Ordering::Relaxed))),
            budget_remaining: self.budget.remaining(),
            enabled: self.enabled.load(Ordering::Relaxed),
        }
    }

    fn set_enabled(&self, enabled: bool) -> bool {
        let was = self.enabled.swap(enabled, Ordering::AcqRel);
        if was != enabled {
            tracing::info!(
                target: "watertight_retry",
                name = %self.name,
                enabled,
                "retries {}",
                if enabled { "enabled" } else { "disabled" }
            );
        }
        was != enabled
    }
}

impl<B: fmt::Debug, P: fmt::Debug> fmt::Debug for Shared<B, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("budget", &self.budget)
            .field("policy", &self.policy)
            .field("on_event", &self.listener.is_some())
            .finish_non_exhaustive()
    }
}
