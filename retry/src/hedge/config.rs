use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use watertight_core::config;

use crate::budget::{AnyBudget, Budget, BudgetConfig};
use crate::error::{invalid, ConfigError, COMPONENT};
use crate::event::Event;
use crate::hedge::HedgeLayer;
use crate::parts::{LayerConfig, Parts};
use crate::policy::StandardPolicy;

const MAX_HEDGES: u32 = 10;

/// When a hedge is sent.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)
)]
#[non_exhaustive]
pub enum HedgeDelay {
    /// After the `1 - max_extra_load` percentile of recent latencies ("The
    /// Tail at Scale": hedging after the 95th percentile costs about 5%
    /// more requests).
    Percentile {
        /// The share of requests that may get a hedge, in `(0, 1)`
        /// (default 0.05: hedge after the 95th percentile).
        #[cfg_attr(feature = "serde", serde(default = "default_max_extra_load"))]
        max_extra_load: f64,
        /// The shortest hedge delay (default 1 ms).
        #[cfg_attr(
            feature = "serde",
            serde(default = "default_min_delay", with = "humantime_serde")
        )]
        min_delay: Duration,
        /// The histogram's top: latencies above are recorded as the top, and
        /// a percentile at the top sends no hedge (default 30 s). At least
        /// 2 µs.
        #[cfg_attr(
            feature = "serde",
            serde(default = "default_max_latency", with = "humantime_serde")
        )]
        max_latency: Duration,
        /// Latencies needed before hedging starts (default 20).
        #[cfg_attr(feature = "serde", serde(default = "default_min_samples"))]
        min_samples: u64,
        /// The histogram covers the last full period (default 10 s). Not
        /// zero.
        #[cfg_attr(
            feature = "serde",
            serde(default = "default_period", with = "humantime_serde")
        )]
        period: Duration,
    },
    /// After a fixed delay.
    Fixed {
        /// The delay. Not zero.
        #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
        delay: Duration,
    },
}

const DEFAULT_MAX_EXTRA_LOAD: f64 = 0.05;

#[cfg(feature = "serde")]
fn default_max_extra_load() -> f64 {
    DEFAULT_MAX_EXTRA_LOAD
}
fn default_min_delay() -> Duration {
    Duration::from_millis(1)
}
fn default_max_latency() -> Duration {
    Duration::from_secs(30)
}
fn default_min_samples() -> u64 {
    20
}
fn default_period() -> Duration {
    Duration::from_secs(10)
}

impl Default for HedgeDelay {
    fn default() -> Self {
        HedgeDelay::percentile(DEFAULT_MAX_EXTRA_LOAD)
    }
}

impl HedgeDelay {
    /// A percentile trigger with the given `max_extra_load` and the other
    /// defaults.
    pub fn percentile(max_extra_load: f64) -> Self {
        HedgeDelay::Percentile {
            max_extra_load,
            min_delay: default_min_delay(),
            max_latency: default_max_latency(),
            min_samples: default_min_samples(),
            period: default_period(),
        }
    }

    /// A fixed delay.
    pub const fn fixed(delay: Duration) -> Self {
        HedgeDelay::Fixed { delay }
    }
}

/// A hedging layer's configuration.
///
/// | field | default |
/// |---|---|
/// | `name` | `"hedge"` |
/// | `delay` | [`HedgeDelay::Percentile`]: 95th percentile, 1 ms floor, 30 s top, 20 samples, 10 s period |
/// | `max_hedged_attempts` | 1 (one backup per request) |
/// | `budget` | `None`: a [`RatioBudget`](crate::budget::RatioBudget) of `max_extra_load` (0.05 for a fixed delay) plus 10/s over 10 s |
///
/// With feature `serde` (TOML shown; every field optional):
///
/// ```toml
/// name = "search"
/// delay = { kind = "percentile", max_extra_load = 0.05, min_delay = "1ms" }
/// # delay = { kind = "fixed", delay = "50ms" }
/// max_hedged_attempts = 1
/// budget = { kind = "ratio", ratio = 0.05 }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        try_from = "serde_impl::RawHedgeConfig",
        into = "serde_impl::RawHedgeConfig"
    )
)]
#[non_exhaustive]
pub struct HedgeConfig {
    /// The instance name: the `name` label of its metrics. Not empty.
    pub name: String,
    /// When a hedge is sent.
    pub delay: HedgeDelay,
    /// The most hedges per request, `1..=10`; a further one follows each
    /// delay while the others are still in flight.
    pub max_hedged_attempts: u32,
    /// The budget every hedge withdraws from, when the builder is not given
    /// one.
    pub budget: Option<BudgetConfig>,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            name: "hedge".to_owned(),
            delay: HedgeDelay::default(),
            max_hedged_attempts: 1,
            budget: None,
        }
    }
}

impl HedgeConfig {
    /// Checks every rule:
    ///
    /// - `name` is not empty;
    /// - `max_hedged_attempts` is in `1..=10`;
    /// - `delay.max_extra_load` is in `(0, 1)`, `delay.period` and
    ///   `delay.delay` are not zero, `delay.max_latency` is at least 2 µs
    ///   and above `delay.min_delay`;
    /// - `budget` follows its own rules.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that breaks a rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        config::name(COMPONENT, &self.name)?;
        config::count(
            COMPONENT,
            "max_hedged_attempts",
            self.max_hedged_attempts.into(),
            MAX_HEDGES.into(),
        )?;
        match self.delay {
            HedgeDelay::Percentile {
                max_extra_load,
                min_delay,
                max_latency,
                period,
                ..
            } => {
                // Open at 1: a 1 would hedge at the 0th percentile, every request.
                if !(max_extra_load > 0.0 && max_extra_load < 1.0) {
                    return Err(invalid(
                        "delay.max_extra_load",
                        format!("must be a fraction in (0, 1), got {max_extra_load}"),
                    ));
                }
                config::non_zero(COMPONENT, "delay.period", period)?;
                if max_latency < Duration::from_micros(2) || max_latency <= min_delay {
                    return Err(invalid(
                        "delay.max_latency",
                        "must be at least 2µs and greater than `min_delay`",
                    ));
                }
            }
            HedgeDelay::Fixed { delay } => config::non_zero(COMPONENT, "delay.delay", delay)?,
        }
        match &self.budget {
            Some(b) => b.validate(),
            None => Ok(()),
        }
    }

    /// The budget used when none is given: a ratio budget of
    /// `max_extra_load`, so hedges stay within the promised extra load even
    /// when latencies shift faster than the histogram follows.
    pub(crate) fn budget_config(&self) -> BudgetConfig {
        match (&self.budget, self.delay) {
            (Some(b), _) => b.clone(),
            (None, HedgeDelay::Percentile { max_extra_load, .. }) => {
                BudgetConfig::ratio(max_extra_load)
            }
            (None, HedgeDelay::Fixed { .. }) => BudgetConfig::ratio(DEFAULT_MAX_EXTRA_LOAD),
        }
    }
}

impl LayerConfig for HedgeConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn budget_config(&self) -> BudgetConfig {
        HedgeConfig::budget_config(self)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        HedgeConfig::validate(self)
    }
}

/// Builds a [`HedgeLayer`]; see [`HedgeConfig`] for every field and its
/// default.
pub struct HedgeBuilder<B = AnyBudget, P = StandardPolicy> {
    parts: Parts<HedgeConfig, B, P>,
}

impl<B, P: fmt::Debug> fmt::Debug for HedgeBuilder<B, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.parts.debug(f, "HedgeBuilder")
    }
}

impl Default for HedgeBuilder {
    fn default() -> Self {
        HedgeBuilder::new()
    }
}

impl HedgeBuilder {
    /// A builder with the defaults of [`HedgeConfig`] and
    /// [`StandardPolicy`].
    pub fn new() -> Self {
        HedgeBuilder {
            parts: Parts::new(HedgeConfig::default(), StandardPolicy::new()),
        }
    }
}

impl<P> HedgeBuilder<AnyBudget, P> {
    /// The budget's configuration (default: a ratio budget of
    /// `max_extra_load`), named after the layer.
    pub fn budget_config(mut self, budget: BudgetConfig) -> Self {
        self.parts.config.budget = Some(budget);
        self
    }
}

impl<B, P> HedgeBuilder<B, P> {
    /// Starts from `config` instead of the defaults.
    pub fn config(mut self, config: HedgeConfig) -> Self {
        self.parts.config = config;
        self
    }

    /// The instance name (default `hedge`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.parts.config.name = name.into();
        self
    }

    /// When hedges are sent (default: after the 95th percentile).
    pub fn delay(mut self, delay: HedgeDelay) -> Self {
        self.parts.config.delay = delay;
        self
    }

    /// The most hedges per request (default 1).
    pub fn max_hedged_attempts(mut self, hedges: u32) -> Self {
        self.parts.config.max_hedged_attempts = hedges;
        self
    }

    /// The budget every hedge withdraws from.
    pub fn budget<B2: Budget>(self, budget: B2) -> HedgeBuilder<B2, P> {
        self.shared_budget(Arc::new(budget))
    }

    /// A budget shared with other layers, or kept to be watched.
    pub fn shared_budget<B2: Budget>(self, budget: Arc<B2>) -> HedgeBuilder<B2, P> {
        HedgeBuilder {
            parts: self.parts.shared_budget(budget),
        }
    }

    /// Replaces the whole [`Policy`](crate::Policy) (only its classifier,
    /// idempotency and copying are used; hedges read no server hints).
    pub fn policy<P2>(self, policy: P2) -> HedgeBuilder<B, P2> {
        self.map_policy(|_| policy)
    }

    fn map_policy<P2>(self, f: impl FnOnce(P) -> P2) -> HedgeBuilder<B, P2> {
        HedgeBuilder {
            parts: self.parts.map_policy(f),
        }
    }

    /// Calls `listener` with every [`Event`]; see [`event`](crate::event).
    pub fn on_event<F>(mut self, listener: F) -> Self
    where
        F: Fn(&Event) + Send + Sync + 'static,
    {
        self.parts.on_event(listener);
        self
    }

    /// Validates the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field; see
    /// [`HedgeConfig::validate`].
    pub fn build(self) -> Result<HedgeLayer<B, P>, ConfigError>
    where
        B: Budget,
        P: Send + Sync + 'static,
    {
        self.parts.build().map(HedgeLayer::from_parts)
    }
}

impl<B, C, I, H, R> HedgeBuilder<B, StandardPolicy<C, I, H, R>> {
    /// Which results count as a success (the first success wins).
    pub fn classify<C2>(self, classify: C2) -> HedgeBuilder<B, StandardPolicy<C2, I, H, R>> {
        self.map_policy(|p| p.classify(classify))
    }

    /// Which requests may be hedged (default
    /// [`SafeRequests`](crate::policy::SafeRequests)).
    pub fn idempotency<I2>(self, idempotency: I2) -> HedgeBuilder<B, StandardPolicy<C, I2, H, R>> {
        self.map_policy(|p| p.idempotency(idempotency))
    }

    /// How requests are copied for a hedge (default
    /// [`ByClone`](crate::policy::ByClone)).
    pub fn clone_request<R2>(self, clone: R2) -> HedgeBuilder<B, StandardPolicy<C, I, H, R2>> {
        self.map_policy(|p| p.clone_request(clone))
    }
}

#[cfg(feature = "serde")]
mod serde_impl {
    use serde::{Deserialize, Serialize};

    use super::{HedgeConfig, HedgeDelay};
    use crate::budget::BudgetConfig;
    use crate::error::ConfigError;

    #[derive(Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub(super) struct RawHedgeConfig {
        name: String,
        delay: HedgeDelay,
        max_hedged_attempts: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        budget: Option<BudgetConfig>,
    }

    impl Default for RawHedgeConfig {
        fn default() -> Self {
            HedgeConfig::default().into()
        }
    }

    impl From<HedgeConfig> for RawHedgeConfig {
        fn from(c: HedgeConfig) -> Self {
            RawHedgeConfig {
                name: c.name,
                delay: c.delay,
                max_hedged_attempts: c.max_hedged_attempts,
                budget: c.budget,
            }
        }
    }

    impl TryFrom<RawHedgeConfig> for HedgeConfig {
        type Error = ConfigError;

        fn try_from(r: RawHedgeConfig) -> Result<Self, ConfigError> {
            let c = HedgeConfig {
                name: r.name,
                delay: r.delay,
                max_hedged_attempts: r.max_hedged_attempts,
                budget: r.budget,
            };
            c.validate()?;
            Ok(c)
        }
    }
}
