//! [`ConcurrencyBudget`]: Envoy's retry budget.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use watertight_core::config;

use super::{check_ratio, remaining_gauge, Budget, Cause, Withdrawal};
use crate::error::{ConfigError, COMPONENT};

const DEFAULT_RATIO: f64 = 0.2;
const DEFAULT_MIN_CONCURRENCY: u32 = 3;
/// Ratio units: exact to six decimals.
const SCALE: u64 = 1_000_000;

#[cfg(feature = "serde")]
pub(super) fn default_min_concurrency() -> u32 {
    DEFAULT_MIN_CONCURRENCY
}

pub(super) fn validate(ratio: f64) -> Result<(), ConfigError> {
    check_ratio("ratio", ratio)
}

/// Envoy's retry budget: retries in flight as a share of requests in
/// flight.
///
/// Envoy's cluster circuit breakers can replace the fixed `max_retries` with
/// a `retry_budget`: the retries that may be active at once are
///
/// ```text
/// max(budget_percent × (active + pending requests), min_retry_concurrency)
/// ```
///
/// (defaults 20% and 3), truncated to a whole number, and a retry may start
/// while fewer than that are active. Here "requests" are the logical
/// requests in flight through the layers sharing the budget (waiting in a
/// backoff included) and a retry is active from the moment it is granted
/// (its backoff included) until its attempt ends.
///
/// ```
/// use watertight_retry::budget::{Budget, Cause, ConcurrencyBudget};
///
/// let budget = ConcurrencyBudget::builder().ratio(0.2).min_concurrency(1).build().unwrap();
/// for _ in 0..10 {
///     budget.deposit(); // ten requests in flight
/// }
/// let a = budget.withdraw(Cause::Retry).unwrap();
/// let b = budget.withdraw(Cause::Retry).unwrap();
/// assert!(budget.withdraw(Cause::Retry).is_none()); // 2 = 20% of 10
/// budget.release(a);
/// assert!(budget.withdraw(Cause::Retry).is_some());
/// # let _ = b;
/// ```
///
/// # Clone
///
/// Not `Clone`: a budget is shared through the `Arc` the layers hold, or
/// one you pass them.
pub struct ConcurrencyBudget {
    name: Arc<str>,
    ratio: f64,
    ratio_units: u64,
    min_concurrency: u64,
    active: AtomicU64,
    retries: AtomicU64,
    gauge: metrics::Gauge,
}

impl ConcurrencyBudget {
    /// A budget with Envoy's defaults: 20% of requests in flight, at least
    /// 3, named `retry`.
    pub fn new() -> Self {
        ConcurrencyBudget::builder()
            .build()
            .expect("the defaults are valid")
    }

    /// A builder starting from the defaults.
    pub fn builder() -> ConcurrencyBudgetBuilder {
        ConcurrencyBudgetBuilder {
            name: "retry".to_owned(),
            ratio: DEFAULT_RATIO,
            min_concurrency: DEFAULT_MIN_CONCURRENCY,
        }
    }

    /// The name (the `name` label of its gauge).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Retries in flight per request in flight.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Retries in flight always allowed.
    pub fn min_concurrency(&self) -> u32 {
        self.min_concurrency as u32
    }

    /// Requests in flight.
    pub fn active_requests(&self) -> u64 {
        self.active.load(Ordering::Acquire)
    }

    /// Retries in flight.
    pub fn active_retries(&self) -> u64 {
        self.retries.load(Ordering::Acquire)
    }

    fn limit(&self, active: u64) -> u64 {
        let share = (u128::from(active) * u128::from(self.ratio_units) / u128::from(SCALE))
            .min(u128::from(u64::MAX)) as u64;
        share.max(self.min_concurrency)
    }

    fn update_gauge(&self) {
        self.gauge.set(self.remaining() as f64);
    }
}

impl Default for ConcurrencyBudget {
    fn default() -> Self {
        ConcurrencyBudget::new()
    }
}

impl Budget for ConcurrencyBudget {
    #[inline]
    fn deposit(&self) {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.update_gauge();
    }

    fn withdraw(&self, _cause: Cause) -> Option<Withdrawal> {
        let mut retries = self.retries.load(Ordering::Acquire);
        let granted = loop {
            if retries >= self.limit(self.active.load(Ordering::Acquire)) {
                break None;
            }
            match self.retries.compare_exchange_weak(
                retries,
                retries + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break Some(Withdrawal::new(1)),
                Err(now) => retries = now,
            }
        };
        self.update_gauge();
        granted
    }

    fn release(&self, withdrawal: Withdrawal) {
        let cost = u64::from(withdrawal.cost());
        let _ = self
            .retries
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                Some(r.saturating_sub(cost))
            });
        self.update_gauge();
    }

    #[inline]
    fn finish(&self) {
        let _ = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                Some(a.saturating_sub(1))
            });
        self.update_gauge();
    }

    fn remaining(&self) -> u64 {
        let limit = self.limit(self.active.load(Ordering::Acquire));
        limit.saturating_sub(self.retries.load(Ordering::Acquire))
    }
}

impl fmt::Debug for ConcurrencyBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyBudget")
            .field("name", &self.name)
            .field("ratio", &self.ratio)
            .field("min_concurrency", &self.min_concurrency)
            .field("active_requests", &self.active_requests())
            .field("active_retries", &self.active_retries())
            .finish()
    }
}

/// Builds a [`ConcurrencyBudget`].
#[derive(Clone, Debug)]
pub struct ConcurrencyBudgetBuilder {
    name: String,
    ratio: f64,
    min_concurrency: u32,
}

impl ConcurrencyBudgetBuilder {
    /// The `name` label of the gauge (default `retry`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Retries in flight allowed per request in flight, `0..=1000` (default
    /// 0.2, Envoy's `budget_percent` of 20%). Exact to six decimals.
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Retries in flight allowed whatever the traffic (default 3, Envoy's
    /// `min_retry_concurrency`).
    pub fn min_concurrency(mut self, min: u32) -> Self {
        self.min_concurrency = min;
        self
    }

    /// Validates and builds the budget.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `name` (empty) or `ratio` (outside
    /// `0..=1000` or not finite).
    pub fn build(self) -> Result<ConcurrencyBudget, ConfigError> {
        config::name(COMPONENT, &self.name)?;
        validate(self.ratio)?;
        let budget = ConcurrencyBudget {
            gauge: remaining_gauge(&self.name),
            name: self.name.into(),
            ratio: self.ratio,
            ratio_units: (self.ratio * SCALE as f64).round() as u64,
            min_concurrency: u64::from(self.min_concurrency),
            active: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        };
        budget.update_gauge();
        Ok(budget)
    }
}
