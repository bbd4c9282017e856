//! Configuration of the retry layer: [`Config`], validated by
//! [`Config::validate`], built with a [`Builder`] or read with serde
//! (feature `serde`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use watertight_core::{config, Backoff};

use crate::budget::{AnyBudget, Budget, BudgetConfig};
use crate::error::{invalid, ConfigError, COMPONENT};
use crate::event::Event;
use crate::layer::RetryLayer;
use crate::parts::{LayerConfig, Parts};
use crate::policy::StandardPolicy;

/// The most attempts accepted for one request.
const MAX_ATTEMPTS: u32 = 100;

/// A retry layer's configuration.
///
/// | field | default |
/// |---|---|
/// | `name` | `"retry"` |
/// | `max_attempts` | 3 (the first included) |
/// | `backoff` | full jitter from 25 ms to 250 ms (Envoy's) |
/// | `max_server_delay` | 300 s |
/// | `timeout` | `None` (no overall deadline but the request's own [`Deadline`](crate::deadline::Deadline)) |
/// | `min_remaining` | 5 ms |
/// | `per_try_timeout` | `None` |
/// | `budget` | [`BudgetConfig::Ratio`]: 20% of requests over 10 s plus 10/s (Finagle's) |
/// | `seed` | `None` (entropy) |
///
/// With feature `serde`, a `Config` deserializes from (TOML shown; every
/// field optional):
///
/// ```toml
/// name = "payments"
/// max_attempts = 3
/// backoff = { kind = "full_jitter", base = "25ms", max = "250ms" }
/// max_server_delay = "300s"
/// timeout = "2s"
/// min_remaining = "5ms"
/// per_try_timeout = "500ms"
/// budget = { kind = "ratio", ratio = 0.2, min_per_sec = 10, ttl = "10s" }
/// seed = 7
/// ```
///
/// and deserialization validates it, with an error naming the field.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(try_from = "serde_impl::RawConfig", into = "serde_impl::RawConfig")
)]
#[non_exhaustive]
pub struct Config {
    /// The instance name: the `name` label of its metrics, the `name` field
    /// of its traces and events. Not empty.
    pub name: String,
    /// Attempts per request, the first included, `1..=100`; 1 turns retries
    /// off.
    pub max_attempts: u32,
    /// The wait before retry `n`.
    pub backoff: Backoff,
    /// The longest delay a server may ask for (`Retry-After`,
    /// `grpc-retry-pushback-ms`); a longer one ends the request with the
    /// failure instead of waiting.
    pub max_server_delay: Duration,
    /// The overall deadline of a request, across all its attempts and
    /// backoffs, from the moment it enters the layer. A request carrying an
    /// earlier [`Deadline`](crate::deadline::Deadline) keeps that one. Not
    /// zero.
    pub timeout: Option<Duration>,
    /// No attempt starts with less than this left before the deadline (and
    /// no backoff is taken that would leave less).
    pub min_remaining: Duration,
    /// One attempt running longer than this is cancelled and counts as a
    /// retryable failure. Not zero.
    pub per_try_timeout: Option<Duration>,
    /// The budget, when the builder is not given one.
    pub budget: BudgetConfig,
    /// Seed of the backoff jitter; `None` seeds from entropy.
    pub seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "retry".to_owned(),
            max_attempts: 3,
            backoff: Backoff::default(),
            max_server_delay: Duration::from_secs(300),
            timeout: None,
            min_remaining: Duration::from_millis(5),
            per_try_timeout: None,
            budget: BudgetConfig::default(),
            seed: None,
        }
    }
}

impl Config {
    /// Checks every rule:
    ///
    /// - `name` is not empty;
    /// - `max_attempts` is in `1..=100`;
    /// - `timeout` and `per_try_timeout` are not zero, and `min_remaining`
    ///   is less than `timeout`;
    /// - `budget` follows its own rules (fields named `budget.ratio`, …).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that breaks a rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        config::name(COMPONENT, &self.name)?;
        config::count(
            COMPONENT,
            "max_attempts",
            self.max_attempts.into(),
            MAX_ATTEMPTS.into(),
        )?;
        if let Some(t) = self.timeout {
            config::non_zero(COMPONENT, "timeout", t)?;
            if self.min_remaining >= t {
                return Err(invalid(
                    "min_remaining",
                    format!("must be less than `timeout` ({t:?})"),
                ));
            }
        }
        if let Some(t) = self.per_try_timeout {
            config::non_zero(COMPONENT, "per_try_timeout", t)?;
        }
        self.budget.validate()
    }
}

impl LayerConfig for Config {
    fn name(&self) -> &str {
        &self.name
    }

    fn budget_config(&self) -> BudgetConfig {
        self.budget.clone()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        Config::validate(self)
    }
}

/// Builds a [`RetryLayer`]; see [`Config`] for every field and its default.
///
/// Setters never fail; [`build`](Builder::build) validates and names the
/// first field at fault.
pub struct Builder<B = AnyBudget, P = StandardPolicy> {
    parts: Parts<Config, B, P>,
}

impl<B, P: fmt::Debug> fmt::Debug for Builder<B, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.parts.debug(f, "Builder")
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// A builder with the defaults of [`Config`] and [`StandardPolicy`].
    pub fn new() -> Self {
        Builder {
            parts: Parts::new(Config::default(), StandardPolicy::new()),
        }
    }
}

impl<P> Builder<AnyBudget, P> {
    /// The budget's configuration (default: a [`RatioBudget`] with
    /// Finagle's defaults), named after the layer.
    ///
    /// [`RatioBudget`]: crate::budget::RatioBudget
    pub fn budget_config(mut self, budget: BudgetConfig) -> Self {
        self.parts.config.budget = budget;
        self
    }
}

impl<B, P> Builder<B, P> {
    /// Starts from `config` instead of the defaults (later setters still
    /// apply).
    pub fn config(mut self, config: Config) -> Self {
        self.parts.config = config;
        self
    }

    /// The instance name (default `retry`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.parts.config.name = name.into();
        self
    }

    /// Attempts per request, the first included (default 3).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.parts.config.max_attempts = attempts;
        self
    }

    /// The wait before each retry (default full jitter, 25 ms to 250 ms).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.parts.config.backoff = backoff;
        self
    }

    /// The longest delay a server may ask for (default 300 s).
    pub fn max_server_delay(mut self, delay: Duration) -> Self {
        self.parts.config.max_server_delay = delay;
        self
    }

    /// An overall deadline for each request, across its attempts (default
    /// none).
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.parts.config.timeout = timeout.into();
        self
    }

    /// No attempt starts with less than this left before the deadline
    /// (default 5 ms).
    pub fn min_remaining(mut self, floor: Duration) -> Self {
        self.parts.config.min_remaining = floor;
        self
    }

    /// A timeout for each attempt (default none).
    pub fn per_try_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.parts.config.per_try_timeout = timeout.into();
        self
    }

    /// Seeds the backoff jitter, for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.parts.config.seed = Some(seed);
        self
    }

    /// The budget every retry withdraws from.
    pub fn budget<B2: Budget>(self, budget: B2) -> Builder<B2, P> {
        self.shared_budget(Arc::new(budget))
    }

    /// A budget shared with other layers, or kept to be watched.
    pub fn shared_budget<B2: Budget>(self, budget: Arc<B2>) -> Builder<B2, P> {
        Builder {
            parts: self.parts.shared_budget(budget),
        }
    }

    /// Replaces the whole [`Policy`](crate::Policy).
    pub fn policy<P2>(self, policy: P2) -> Builder<B, P2> {
        self.map_policy(|_| policy)
    }

    fn map_policy<P2>(self, f: impl FnOnce(P) -> P2) -> Builder<B, P2> {
        Builder {
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
    /// A [`ConfigError`] naming the first invalid field; the rules are
    /// those of [`Config::validate`].
    pub fn build(self) -> Result<RetryLayer<B, P>, ConfigError>
    where
        B: Budget,
        P: Send + Sync + 'static,
    {
        self.parts.build().map(RetryLayer::from_parts)
    }
}

impl<B, C, I, H, R> Builder<B, StandardPolicy<C, I, H, R>> {
    /// How results are judged (default
    /// [`ErrorsAsFailures`](watertight_core::ErrorsAsFailures); for HTTP,
    /// `ServerErrorsAsFailures`). Only retryable failures are retried.
    pub fn classify<C2>(self, classify: C2) -> Builder<B, StandardPolicy<C2, I, H, R>> {
        self.map_policy(|p| p.classify(classify))
    }

    /// Which requests may be sent more than once (default
    /// [`SafeRequests`](crate::policy::SafeRequests)).
    pub fn idempotency<I2>(self, idempotency: I2) -> Builder<B, StandardPolicy<C, I2, H, R>> {
        self.map_policy(|p| p.idempotency(idempotency))
    }

    /// How server hints are read (default
    /// [`HeaderHints`](crate::policy::HeaderHints)).
    pub fn hints<H2>(self, hints: H2) -> Builder<B, StandardPolicy<C, I, H2, R>> {
        self.map_policy(|p| p.hints(hints))
    }

    /// How requests are copied for another attempt (default
    /// [`ByClone`](crate::policy::ByClone)).
    pub fn clone_request<R2>(self, clone: R2) -> Builder<B, StandardPolicy<C, I, H, R2>> {
        self.map_policy(|p| p.clone_request(clone))
    }
}

#[cfg(feature = "serde")]
mod serde_impl {
    //! The serde shape of [`Config`]: every field optional, humantime
    //! durations, validation on the way in.

    use std::time::Duration;

    use serde::{Deserialize, Serialize};
    use watertight_core::Backoff;

    use super::Config;
    use crate::budget::BudgetConfig;
    use crate::error::ConfigError;

    #[derive(Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub(super) struct RawConfig {
        name: String,
        max_attempts: u32,
        backoff: Backoff,
        #[serde(with = "humantime_serde")]
        max_server_delay: Duration,
        #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
        timeout: Option<Duration>,
        #[serde(with = "humantime_serde")]
        min_remaining: Duration,
        #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
        per_try_timeout: Option<Duration>,
        budget: BudgetConfig,
        #[serde(skip_serializing_if = "Option::is_none")]
        seed: Option<u64>,
    }

    impl Default for RawConfig {
        fn default() -> Self {
            RawConfig::from(Config::default())
        }
    }

    impl From<Config> for RawConfig {
        fn from(c: Config) -> Self {
            RawConfig {
                name: c.name,
                max_attempts: c.max_attempts,
                backoff: c.backoff,
                max_server_delay: c.max_server_delay,
                timeout: c.timeout,
                min_remaining: c.min_remaining,
                per_try_timeout: c.per_try_timeout,
                budget: c.budget,
                seed: c.seed,
            }
        }
    }

    impl TryFrom<RawConfig> for Config {
        type Error = ConfigError;

        fn try_from(r: RawConfig) -> Result<Self, ConfigError> {
            let c = Config {
                name: r.name,
                max_attempts: r.max_attempts,
                backoff: r.backoff,
                max_server_delay: r.max_server_delay,
                timeout: r.timeout,
                min_remaining: r.min_remaining,
                per_try_timeout: r.per_try_timeout,
                budget: r.budget,
                seed: r.seed,
            };
            c.validate()?;
            Ok(c)
        }
    }
}
