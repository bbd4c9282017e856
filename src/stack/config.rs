//! [`ClientConfig`]: the recommended client stack's configuration, and its
//! [`ConfigError`].

use std::time::Duration;

use watertight_bulkhead::limit::VegasConfig;
use watertight_bulkhead::{
    AdaptiveConfig, AdmissionConfig, AlgorithmConfig, BulkheadConfig, Mode as BulkheadMode,
};
use watertight_circuit_breaker::{Config as BreakerConfig, Mode as BreakerMode, Window};
use watertight_core::Locality;
use watertight_loadbalance::{Config as BalancerConfig, OutlierDetection};
use watertight_retry::budget::BudgetConfig;
use watertight_retry::Config as RetryConfig;

/// The configuration of the [recommended client stack](super): one field
/// per layer, each the layer crate's own configuration type, so a stack is
/// tuned from one file.
///
/// The defaults are the layer crates' own (Envoy's, Finagle's, Netflix's,
/// Google SRE's, gRPC's) except where the
/// [stack docs](super#defaults-that-differ) say why the stack differs:
///
/// | field | default |
/// |---|---|
/// | `name` | `"client"`; each layer is named after it unless its own configuration names it |
/// | `concurrency` | windowed Vegas (Netflix's window and defaults), initial limit 50, fail-fast, no queue |
/// | `admission` | K = 2 over 30 s, at most 80% rejected (Google SRE) |
/// | `retry` | 3 attempts, full jitter 25 ms → 250 ms (Envoy), overall deadline 10 s, gRPC retry throttling (100 tokens, 0.1 per success) |
/// | `balancer` | P2C over PeakEWMA, zone-aware routing when a local cluster is given, Envoy's outlier detection with `max_ejection_percent` 34 |
/// | `breaker` | slow calls only: half of the last 10 calls (5 at least) slower than `slow_call_duration` (unset: `breaker_slow_call_share` of the per-try timeout); open 5 s → 300 s |
/// | `breaker_slow_call_share` | 0.5 |
/// | `breaker_max_open_percent` | 34 |
/// | `endpoint_limit` | 10 requests in flight per endpoint |
/// | `per_try_timeout` | 1 s |
/// | `buffer` | 1024 |
/// | `seed` | `None` (entropy) |
///
/// With feature `serde` it deserializes from (TOML shown; every field is
/// optional, and each layer's table takes that layer's fields, validated
/// with errors naming the field):
///
/// ```toml
/// name = "inventory"
/// per_try_timeout = "250ms"
///
/// [balancer]
/// local_locality = { region = "eu-west-1", zone = "eu-west-1a" }
/// outlier_detection = { max_ejection_percent = 34.0 }
///
/// [retry]
/// max_attempts = 3
/// timeout = "2s"
/// budget = { kind = "ratio", ratio = 0.2, min_per_sec = 10, ttl = "10s" }
///
/// [concurrency.algorithm]
/// kind = "vegas"
/// max_limit = 200
/// ```
///
/// Each layer's table starts from the stack's default for that layer (not
/// the layer crate's), so `[retry] max_attempts = 2` keeps the stack's
/// budget and deadline; a table with another `kind` (`budget = { kind =
/// "ratio" }`) replaces the default's. `concurrency`, `admission`,
/// `breaker` and `endpoint_limit` take `false` to turn the layer off, or
/// `true` for the stack's default. The whole configuration is validated on
/// the way in ([`validate`](Self::validate)).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The client's name: every layer's `name` (the `name` label of its
    /// metrics) unless that layer's own configuration names it otherwise.
    pub name: String,
    /// The client-wide concurrency limit (outermost): requests beyond it
    /// fail at once with `watertight::bulkhead::error::Full`. `None` turns
    /// it off.
    #[cfg_attr(feature = "serde", serde(with = "serde_impl::optional"))]
    pub concurrency: Option<AdaptiveConfig>,
    /// Client-side throttling inside the limit: rejects locally the share
    /// of requests the backends would refuse anyway. `None` turns it off.
    #[cfg_attr(feature = "serde", serde(with = "serde_impl::optional"))]
    pub admission: Option<AdmissionConfig>,
    /// Retries, their budget and the overall deadline (`retry.timeout`).
    /// The per-try timeout of the stack is [`per_try_timeout`](Self::per_try_timeout),
    /// applied per endpoint; `retry.per_try_timeout` adds one around the
    /// balancer (its wait for a ready endpoint included) when set.
    pub retry: RetryConfig,
    /// The balancer: locality routing, endpoint pick, outlier detection.
    pub balancer: BalancerConfig,
    /// A circuit breaker on every endpoint, always in `Backpressure` mode
    /// (whatever its `mode` says), all of a client's in one
    /// [`BreakerGroup`](crate::circuit_breaker::BreakerGroup). `None`: none.
    #[cfg_attr(feature = "serde", serde(with = "serde_impl::optional"))]
    pub breaker: Option<BreakerConfig>,
    /// The per-endpoint breakers' `slow_call_duration`, when
    /// `breaker.slow_call_duration` is not set, as a share of
    /// [`per_try_timeout`](Self::per_try_timeout), so it follows the
    /// timeout. In `(0, 1]`.
    pub breaker_slow_call_share: f64,
    /// The most per-endpoint breakers of a client open at once, in percent
    /// of its endpoints (one may always open); see
    /// [`BreakerGroup`](crate::circuit_breaker::BreakerGroup). In
    /// `[0, 100]`.
    pub breaker_max_open_percent: f64,
    /// A fixed limit of requests in flight on every endpoint, always in
    /// `Backpressure` mode (whatever its `mode` says): an endpoint at its
    /// limit is skipped by the balancer, and counts as unavailable for
    /// zone-aware routing until a request completes. `None`: none.
    #[cfg_attr(feature = "serde", serde(with = "serde_impl::optional"))]
    pub endpoint_limit: Option<BulkheadConfig>,
    /// How long one attempt on one endpoint may take; a timed-out attempt
    /// is a failure of that endpoint (for outlier detection and the
    /// breaker) and retryable. Not zero.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub per_try_timeout: Duration,
    /// Requests the balancer's queue holds (it is shared by the client's
    /// clones through `tower::buffer::Buffer`). At least 1.
    pub buffer: usize,
    /// Seed of every random choice of every layer; `None` seeds from
    /// entropy.
    pub seed: Option<u64>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        let name = "client".to_owned();
        ClientConfig {
            concurrency: Some(ClientConfig::default_concurrency()),
            admission: Some(AdmissionConfig::default()),
            retry: ClientConfig::default_retry(),
            balancer: ClientConfig::default_balancer(),
            breaker: Some(ClientConfig::default_breaker()),
            breaker_slow_call_share: 0.5,
            breaker_max_open_percent: 34.0,
            endpoint_limit: Some(ClientConfig::default_endpoint_limit()),
            per_try_timeout: Duration::from_secs(1),
            buffer: 1024,
            seed: None,
            name,
        }
    }
}

impl ClientConfig {
    /// The stack's client-wide concurrency limit: Vegas windowed as
    /// Netflix's `WindowedLimit`, with Netflix's defaults but an initial
    /// limit of 50 (Netflix: 20), fail-fast, no queue.
    pub fn default_concurrency() -> AdaptiveConfig {
        let mut c = AdaptiveConfig::default();
        let mut vegas = VegasConfig::default();
        vegas.initial_limit = 50;
        c.algorithm = AlgorithmConfig::Vegas(vegas);
        c
    }

    /// The stack's per-endpoint limit: 10 requests in flight, backpressure.
    pub fn default_endpoint_limit() -> BulkheadConfig {
        let mut b = BulkheadConfig::default();
        b.max_concurrent = 10;
        b.mode = BulkheadMode::Backpressure;
        b
    }

    /// The stack's retry configuration: the retry crate's defaults (Envoy's
    /// attempts and backoff) with a 10 s overall deadline and gRPC's retry
    /// throttling (100 tokens, 0.1 per success) as the budget.
    pub fn default_retry() -> RetryConfig {
        let mut r = RetryConfig::default();
        r.timeout = Some(Duration::from_secs(10));
        r.budget = BudgetConfig::Grpc {
            max_tokens: 100,
            token_ratio: 0.1,
        };
        r
    }

    /// The stack's balancer: the balancer crate's defaults with
    /// `max_ejection_percent` 34, so outlier detection can take a whole
    /// zone of three out of rotation.
    pub fn default_balancer() -> BalancerConfig {
        let mut b = BalancerConfig::default();
        let mut od = OutlierDetection::default();
        od.max_ejection_percent = 34.0;
        b.outlier_detection = Some(od);
        b
    }

    /// The stack's per-endpoint breaker: it trips on slow calls only (half
    /// of its last 10 calls, once it has 5, slower than
    /// `breaker_slow_call_share` of the per-try timeout, as
    /// `slow_call_duration` is left unset) and leaves failures to outlier
    /// detection; open 5 s at first, growing to 300 s over
    /// repeated trips (the crate's default backoff); one probe, which
    /// closes it only if it is neither failed nor slow.
    pub fn default_breaker() -> BreakerConfig {
        let mut b = BreakerConfig::default();
        b.mode = BreakerMode::Backpressure;
        b.failure_rate_threshold = None;
        b.consecutive_failures = None;
        b.window = Window::Count { size: 10 };
        b.minimum_calls = 5;
        b.slow_call_rate_threshold = 0.5;
        b
    }

    /// Sets `name`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets where this client runs (`balancer.local_locality`).
    pub fn locality(mut self, locality: Locality) -> Self {
        self.balancer.local_locality = Some(locality);
        self
    }

    /// Sets `per_try_timeout`.
    pub fn per_try_timeout(mut self, timeout: Duration) -> Self {
        self.per_try_timeout = timeout;
        self
    }

    /// Sets `retry.max_attempts` (the first attempt included).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.retry.max_attempts = attempts;
        self
    }

    /// Sets `seed`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks every rule: `name` is not empty, `per_try_timeout` is not
    /// zero, `buffer` is at least 1, and each layer's configuration follows
    /// its own rules (the field is then named within the layer's, e.g.
    /// `retry.budget.ratio`).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that breaks a rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new(COMPONENT, "name", "must not be empty"));
        }
        if self.per_try_timeout.is_zero() {
            return Err(ConfigError::new(
                COMPONENT,
                "per_try_timeout",
                "must be greater than zero",
            ));
        }
        if self.buffer == 0 {
            return Err(ConfigError::new(COMPONENT, "buffer", "must be at least 1"));
        }
        if let Some(c) = &self.concurrency {
            c.validate()
                .map_err(|e| e.within(COMPONENT, "concurrency"))?;
        }
        if let Some(a) = &self.admission {
            a.validate().map_err(|e| e.within(COMPONENT, "admission"))?;
        }
        self.retry
            .validate()
            .map_err(|e| e.within(COMPONENT, "retry"))?;
        self.balancer
            .validate()
            .map_err(|e| e.within(COMPONENT, "balancer"))?;
        if let Some(b) = &self.breaker {
            b.validate().map_err(|e| e.within(COMPONENT, "breaker"))?;
        }
        let share = self.breaker_slow_call_share;
        if !(share > 0.0 && share <= 1.0) {
            return Err(ConfigError::new(
                COMPONENT,
                "breaker_slow_call_share",
                format!("must be in (0, 1], got {share}"),
            ));
        }
        if !(0.0..=100.0).contains(&self.breaker_max_open_percent) {
            return Err(ConfigError::new(
                COMPONENT,
                "breaker_max_open_percent",
                format!("must be in [0, 100], got {}", self.breaker_max_open_percent),
            ));
        }
        if let Some(c) = &self.endpoint_limit {
            c.validate()
                .map_err(|e| e.within(COMPONENT, "endpoint_limit"))?;
        }
        Ok(())
    }
}

/// An invalid [`ClientConfig`] (or an invalid combination of it with what
/// the builder was given) is a [`ConfigError`] of component `client` whose
/// field is nested as in the configuration file (`retry.budget.ratio`).
pub use watertight_core::ConfigError;

/// The component name of the stack's configuration errors.
pub(crate) const COMPONENT: &str = "client";

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for ClientConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let given = serde_json::Value::deserialize(d)?;
        let mut merged = serde_json::to_value(ClientConfig::default()).map_err(D::Error::custom)?;
        serde_impl::merge(&mut merged, given);
        let config = ClientConfig::deserialize(merged).map_err(D::Error::custom)?;
        config.validate().map_err(D::Error::custom)?;
        Ok(config)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for ClientConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ClientConfig::serialize(self, s)
    }
}

#[cfg(feature = "serde")]
mod serde_impl {
    use serde_json::Value;

    /// Lays `given` over `base`: tables merge key by key, anything else
    /// replaces; a table whose `kind` differs from the base's replaces it
    /// whole (another algorithm or budget has other fields); `true` for a
    /// layer keeps the base's table.
    pub(super) fn merge(base: &mut Value, given: Value) {
        match (base, given) {
            (Value::Object(b), Value::Object(g)) => {
                let same_kind = match (b.get("kind"), g.get("kind")) {
                    (Some(x), Some(y)) => x == y,
                    _ => true,
                };
                if !same_kind {
                    *b = g;
                    return;
                }
                for (k, v) in g {
                    match b.get_mut(&k) {
                        Some(slot) => merge(slot, v),
                        None => {
                            b.insert(k, v);
                        }
                    }
                }
            }
            (Value::Object(_), Value::Bool(true)) => {}
            (b, g) => *b = g,
        }
    }

    /// An optional layer: its table, `true` for the stack's default, or
    /// `false` for none.
    pub(super) mod optional {
        use std::fmt;
        use std::marker::PhantomData;

        use serde::de::{self, Deserializer, MapAccess, Visitor};
        use serde::{Deserialize, Serialize, Serializer};

        /// The layer's configuration when the file says `true`.
        pub(crate) trait StackDefault {
            fn stack_default() -> Self;
        }

        impl StackDefault for watertight_bulkhead::AdaptiveConfig {
            fn stack_default() -> Self {
                crate::stack::ClientConfig::default_concurrency()
            }
        }

        impl StackDefault for watertight_bulkhead::AdmissionConfig {
            fn stack_default() -> Self {
                Self::default()
            }
        }

        impl StackDefault for watertight_circuit_breaker::Config {
            fn stack_default() -> Self {
                crate::stack::ClientConfig::default_breaker()
            }
        }

        impl StackDefault for watertight_bulkhead::BulkheadConfig {
            fn stack_default() -> Self {
                crate::stack::ClientConfig::default_endpoint_limit()
            }
        }

        pub(crate) fn serialize<T: Serialize, S: Serializer>(
            value: &Option<T>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(v) => v.serialize(s),
                None => s.serialize_bool(false),
            }
        }

        pub(crate) fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
        where
            T: Deserialize<'de> + StackDefault,
            D: Deserializer<'de>,
        {
            struct V<T>(PhantomData<T>);
            impl<'de, T: Deserialize<'de> + StackDefault> Visitor<'de> for V<T> {
                type Value = Option<T>;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a table, or `true`/`false` to turn the layer on or off")
                }

                fn visit_bool<E: de::Error>(self, on: bool) -> Result<Self::Value, E> {
                    Ok(on.then(T::stack_default))
                }

                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                    T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
                }
            }
            d.deserialize_any(V(PhantomData))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ClientConfig::default().validate().unwrap();
    }

    #[test]
    fn invalid_fields_are_named_within_their_layer() {
        let mut c = ClientConfig::default();
        c.retry.max_attempts = 0;
        assert_eq!(c.validate().unwrap_err().field(), "retry.max_attempts");

        let mut c = ClientConfig::default();
        c.balancer.healthy_panic_threshold = 200.0;
        assert_eq!(
            c.validate().unwrap_err().field(),
            "balancer.healthy_panic_threshold"
        );

        let c = ClientConfig::default().per_try_timeout(Duration::ZERO);
        let e = c.validate().unwrap_err();
        assert_eq!(e.field(), "per_try_timeout");
        assert!(e.to_string().contains("per_try_timeout"), "{e}");

        let c = ClientConfig {
            buffer: 0,
            ..ClientConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().field(), "buffer");
    }
}
