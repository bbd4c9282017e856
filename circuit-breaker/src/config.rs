//! Configuration: [`Config`], validated by [`Config::validate`], built with
//! a [`Builder`] or read with serde (feature `serde`).

use std::fmt;
use std::time::Duration;

use watertight_core::config::{count, fraction, non_zero};
use watertight_core::{Backoff, ErrorsAsFailures};

use crate::error::{ConfigError, COMPONENT};
use crate::event::{Event, Listener};
use crate::group::BreakerGroup;
use crate::keyed::KeyedBuilder;
use crate::layer::CircuitBreakerLayer;

/// The largest count window and the most time-window buckets accepted.
const MAX_WINDOW: usize = 1 << 20;
const MAX_BUCKETS: usize = 10_000;

/// What a rejecting breaker does to `poll_ready`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Mode {
    /// `poll_ready` is `Ready` and `call` fails at once with
    /// [`error::Open`](crate::error::Open). For callers that handle the
    /// error (fallbacks, retries elsewhere).
    #[default]
    FailFast,
    /// `poll_ready` is `Pending` while the breaker rejects, and the task is
    /// woken when the next probe may go (the open duration's end, or a
    /// probe permit coming back). For per-endpoint breakers under a load
    /// balancer, which then skips the endpoint, as linkerd does.
    Backpressure,
}

/// The window the rate policies are computed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)
)]
pub enum Window {
    /// The last `size` calls.
    Count {
        /// Calls in the window, `1..=1_048_576`.
        size: usize,
    },
    /// The calls of the last `duration`, in `buckets` buckets rolled as
    /// time passes.
    Time {
        /// The length of the window.
        #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
        duration: Duration,
        /// Buckets, `1..=10_000`; more buckets forget old calls more
        /// smoothly.
        buckets: usize,
    },
}

impl Default for Window {
    /// The last 100 calls, resilience4j's default.
    fn default() -> Self {
        Window::Count { size: 100 }
    }
}

/// A circuit breaker's configuration.
///
/// The defaults follow resilience4j for the rate policy and linkerd/Finagle
/// failure accrual for the consecutive-failure policy:
///
/// | field | default |
/// |---|---|
/// | `name` | `"circuit_breaker"` |
/// | `mode` | [`Mode::FailFast`] |
/// | `failure_rate_threshold` | `Some(0.5)` |
/// | `minimum_calls` | 20 |
/// | `window` | count window of 100 calls |
/// | `slow_call_duration` | `None` (slow-call policy off) |
/// | `slow_call_rate_threshold` | 1.0 |
/// | `consecutive_failures` | `Some(5)` |
/// | `open_backoff` | equal jitter from 5 s to 300 s (Finagle's failure accrual range) |
/// | `permitted_probes` | 1 |
/// | `success_threshold` | 1 |
/// | `max_half_open_duration` | `Some(60 s)` |
/// | `seed` | `None` (entropy) |
///
/// Trip policies are OR-ed: the breaker opens when any enabled one fires,
/// and the transition event says which fired.
///
/// With feature `serde`, a `Config` deserializes from (TOML shown; every
/// field is optional, `false` turns a policy off):
///
/// ```toml
/// name = "payments"
/// mode = "backpressure"
/// failure_rate_threshold = 0.5          # or false
/// minimum_calls = 20
/// window = { kind = "time", duration = "60s", buckets = 60 }   # or { kind = "count", size = 100 }
/// slow_call_duration = "2s"
/// slow_call_rate_threshold = 0.8
/// consecutive_failures = 5              # or false
/// open_backoff = { kind = "equal_jitter", base = "5s", max = "300s" }
/// # open_duration = "30s"               # a constant open duration instead of open_backoff
/// permitted_probes = 1
/// success_threshold = 1
/// max_half_open_duration = "60s"        # or false
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
    /// The instance name: the `name` label of its metrics and the `name`
    /// field of its traces and events. Not empty.
    pub name: String,
    /// What a rejecting breaker does to `poll_ready`.
    pub mode: Mode,
    /// Trip when `failures / calls >= threshold` over the window, once it
    /// holds `minimum_calls` calls (resilience4j semantics). A fraction in
    /// `(0, 1]`; `None` turns the policy off.
    pub failure_rate_threshold: Option<f64>,
    /// The calls the window must hold before a rate policy may trip, at
    /// least 1. For a count window, at most its size is needed (a larger
    /// value acts as the size, as in resilience4j).
    pub minimum_calls: u64,
    /// The window of the failure-rate and slow-call-rate policies.
    pub window: Window,
    /// A call slower than this is slow; `None` turns the slow-call policy
    /// off (and the breaker reads the clock per call only when it is on, or
    /// the window is a time window).
    pub slow_call_duration: Option<Duration>,
    /// Trip when `slow_calls / calls >= threshold` over the window. A
    /// fraction in `(0, 1]`.
    pub slow_call_rate_threshold: f64,
    /// Trip after this many failures in a row (at least 1); `None` turns
    /// the policy off.
    pub consecutive_failures: Option<u32>,
    /// How long the breaker stays open: step `n` of this backoff after the
    /// `n`-th trip in a row (a failed probe is another trip); closing starts
    /// over.
    pub open_backoff: Backoff,
    /// Probes admitted at once when half-open, `1..=65_535`.
    pub permitted_probes: u32,
    /// Probe successes that close the breaker, `1..=65_535`.
    pub success_threshold: u32,
    /// A half-open breaker reopens when every probe permit is taken and no
    /// probe has come back for this long since it half-opened (a stuck
    /// probe must not keep it half-open for ever). Checked when a call or a
    /// waiting `Backpressure` service finds no permit. Not zero; `None`
    /// waits for ever.
    pub max_half_open_duration: Option<Duration>,
    /// Seed of the open-backoff jitter; `None` seeds from entropy.
    pub seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "circuit_breaker".to_owned(),
            mode: Mode::FailFast,
            failure_rate_threshold: Some(0.5),
            minimum_calls: 20,
            window: Window::default(),
            slow_call_duration: None,
            slow_call_rate_threshold: 1.0,
            consecutive_failures: Some(5),
            open_backoff: default_open_backoff(),
            permitted_probes: 1,
            success_threshold: 1,
            max_half_open_duration: Some(Duration::from_secs(60)),
            seed: None,
        }
    }
}

fn default_open_backoff() -> Backoff {
    Backoff::equal_jitter(Duration::from_secs(5), Duration::from_secs(300))
        .expect("5 s to 300 s is a valid backoff")
}

impl Config {
    /// Checks every rule:
    ///
    /// - `name` is not empty;
    /// - `failure_rate_threshold` and `slow_call_rate_threshold` are in
    ///   `(0, 1]`;
    /// - `minimum_calls`, `consecutive_failures` are at least 1;
    /// - `window.size` is in `1..=1_048_576`; `window.duration` is not zero,
    ///   `window.buckets` is in `1..=10_000` and each bucket is at least a
    ///   nanosecond long;
    /// - `slow_call_duration` and `max_half_open_duration` are not zero;
    /// - `permitted_probes` and `success_threshold` are in `1..=65_535`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that breaks a rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        watertight_core::config::name(COMPONENT, &self.name)?;
        if let Some(t) = self.failure_rate_threshold {
            fraction(COMPONENT, "failure_rate_threshold", t)?;
        }
        if self.minimum_calls == 0 {
            return Err(ConfigError::new(
                COMPONENT,
                "minimum_calls",
                "must be at least 1",
            ));
        }
        match self.window {
            Window::Count { size } => {
                count(COMPONENT, "window.size", size as u64, MAX_WINDOW as u64)?
            }
            Window::Time { duration, buckets } => {
                non_zero(COMPONENT, "window.duration", duration)?;
                count(
                    COMPONENT,
                    "window.buckets",
                    buckets as u64,
                    MAX_BUCKETS as u64,
                )?;
                if duration.as_nanos() < buckets as u128 {
                    return Err(ConfigError::new(
                        COMPONENT,
                        "window.buckets",
                        "must not exceed the window duration in nanoseconds",
                    ));
                }
            }
        }
        if let Some(d) = self.slow_call_duration {
            non_zero(COMPONENT, "slow_call_duration", d)?;
        }
        fraction(
            COMPONENT,
            "slow_call_rate_threshold",
            self.slow_call_rate_threshold,
        )?;
        if self.consecutive_failures == Some(0) {
            return Err(ConfigError::new(
                COMPONENT,
                "consecutive_failures",
                "must be at least 1",
            ));
        }
        count(
            COMPONENT,
            "permitted_probes",
            self.permitted_probes.into(),
            65_535,
        )?;
        count(
            COMPONENT,
            "success_threshold",
            self.success_threshold.into(),
            65_535,
        )?;
        if let Some(d) = self.max_half_open_duration {
            non_zero(COMPONENT, "max_half_open_duration", d)?;
        }
        Ok(())
    }

    /// Whether a rate policy needs the window.
    pub(crate) fn uses_window(&self) -> bool {
        self.failure_rate_threshold.is_some() || self.slow_call_duration.is_some()
    }
}

/// Builds a [`CircuitBreakerLayer`]; see [`Config`] for every field and its
/// default.
///
/// Setters never fail; [`build`](Builder::build) validates and names the
/// first field at fault.
pub struct Builder<C = ErrorsAsFailures> {
    group: Option<BreakerGroup>,
    config: Config,
    classify: C,
    listener: Option<Listener>,
    error: Option<ConfigError>,
}

impl<C: fmt::Debug> fmt::Debug for Builder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("classify", &self.classify)
            .field("on_event", &self.listener.is_some())
            .field("group", &self.group)
            .finish()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// A builder with the defaults of [`Config`] and
    /// [`ErrorsAsFailures`].
    pub fn new() -> Self {
        Builder {
            group: None,
            config: Config::default(),
            classify: ErrorsAsFailures,
            listener: None,
            error: None,
        }
    }
}

impl<C> Builder<C> {
    /// Starts from `config` instead of the defaults (later setters still
    /// apply).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The instance name (default `circuit_breaker`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// [`Mode::FailFast`] (default) or [`Mode::Backpressure`].
    pub fn mode(mut self, mode: Mode) -> Self {
        self.config.mode = mode;
        self
    }

    /// Trips when the failure rate reaches `threshold`, a fraction in
    /// `(0, 1]` (default 0.5). Turns the policy on.
    pub fn failure_rate_threshold(mut self, threshold: f64) -> Self {
        self.config.failure_rate_threshold = Some(threshold);
        self
    }

    /// Turns the failure-rate policy off.
    pub fn disable_failure_rate(mut self) -> Self {
        self.config.failure_rate_threshold = None;
        self
    }

    /// The calls the window must hold before a rate policy may trip
    /// (default 20).
    pub fn minimum_calls(mut self, calls: u64) -> Self {
        self.config.minimum_calls = calls;
        self
    }

    /// Rates over the last `size` calls (the default, 100).
    pub fn count_window(mut self, size: usize) -> Self {
        self.config.window = Window::Count { size };
        self
    }

    /// Rates over the calls of the last `duration`, in `buckets` buckets.
    pub fn time_window(mut self, duration: Duration, buckets: usize) -> Self {
        self.config.window = Window::Time { duration, buckets };
        self
    }

    /// Calls slower than `duration` are slow; turns the slow-call policy on.
    pub fn slow_call_duration(mut self, duration: Duration) -> Self {
        self.config.slow_call_duration = Some(duration);
        self
    }

    /// Trips when the slow-call rate reaches `threshold`, a fraction in
    /// `(0, 1]` (default 1.0). Only used with
    /// [`slow_call_duration`](Self::slow_call_duration).
    pub fn slow_call_rate_threshold(mut self, threshold: f64) -> Self {
        self.config.slow_call_rate_threshold = threshold;
        self
    }

    /// Trips after `failures` failures in a row (default 5). Turns the
    /// policy on.
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.config.consecutive_failures = Some(failures);
        self
    }

    /// Turns the consecutive-failures policy off.
    pub fn disable_consecutive_failures(mut self) -> Self {
        self.config.consecutive_failures = None;
        self
    }

    /// The open duration grows along `backoff` over repeated trips and
    /// starts over when the breaker closes (default: equal jitter, 5 s to
    /// 300 s).
    pub fn open_backoff(mut self, backoff: Backoff) -> Self {
        self.config.open_backoff = backoff;
        self
    }

    /// A constant open duration, the same after every trip. Zero is an
    /// error naming `open_duration`.
    pub fn open_duration(mut self, duration: Duration) -> Self {
        match Backoff::constant(duration) {
            Ok(b) => self.config.open_backoff = b,
            Err(_) => {
                self.error.get_or_insert(ConfigError::new(
                    COMPONENT,
                    "open_duration",
                    "must be greater than zero",
                ));
            }
        }
        self
    }

    /// Probes admitted at once when half-open (default 1).
    pub fn permitted_probes(mut self, probes: u32) -> Self {
        self.config.permitted_probes = probes;
        self
    }

    /// Probe successes that close the breaker (default 1).
    pub fn success_threshold(mut self, successes: u32) -> Self {
        self.config.success_threshold = successes;
        self
    }

    /// How long a half-open breaker whose probe permits are all taken waits
    /// for a probe to come back before it reopens (default 60 s); `None`
    /// waits for ever.
    pub fn max_half_open_duration(mut self, duration: impl Into<Option<Duration>>) -> Self {
        self.config.max_half_open_duration = duration.into();
        self
    }

    /// Seeds the open-backoff jitter, for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// How results are judged (default [`ErrorsAsFailures`]). A
    /// [`ResponseClass::Failure`](watertight_core::ResponseClass::Failure)
    /// counts as a failure whether or not it is retryable;
    /// [`ResponseClass::Ignored`](watertight_core::ResponseClass::Ignored)
    /// counts nowhere. The classifier is cloned into every response future,
    /// so wrap a large one in an `Arc`.
    pub fn classify<C2>(self, classify: C2) -> Builder<C2> {
        Builder {
            config: self.config,
            classify,
            listener: self.listener,
            error: self.error,
            group: self.group,
        }
    }

    /// Makes every breaker the layer builds a member of `group`, which
    /// caps how many of its members may be open at once (see
    /// [`BreakerGroup`]): for per-endpoint breakers under a balancer, so a
    /// failure of every endpoint at once does not open every breaker. Not
    /// for [keyed](Self::keyed) breakers.
    pub fn group(mut self, group: BreakerGroup) -> Self {
        self.group = Some(group);
        self
    }

    /// Calls `listener` with every [`Event`]; see [`event`](crate::event).
    pub fn on_event<F>(mut self, listener: F) -> Self
    where
        F: Fn(&Event) + Send + Sync + 'static,
    {
        self.listener = Some(std::sync::Arc::new(listener));
        self
    }

    /// Validates the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field; the rules are
    /// those of [`Config::validate`], plus a zero
    /// [`open_duration`](Self::open_duration).
    pub fn build(self) -> Result<CircuitBreakerLayer<C>, ConfigError> {
        let (config, classify, listener, group) = self.into_parts()?;
        Ok(CircuitBreakerLayer::from_parts(config, classify, listener).with_group(group))
    }

    /// One breaker per key instead of one for all calls: continues with a
    /// [`KeyedBuilder`] whose breakers all follow this configuration, the
    /// key of a request being what `extract` returns (a host, a route, a
    /// tenant). The key's `Display` form names the breaker's `key` in
    /// metrics, traces and events.
    ///
    /// ```
    /// use watertight_circuit_breaker::CircuitBreakerLayer;
    ///
    /// # fn main() -> Result<(), watertight_circuit_breaker::error::ConfigError> {
    /// struct Request { tenant: u32 }
    ///
    /// let layer = CircuitBreakerLayer::builder()
    ///     .consecutive_failures(3)
    ///     .keyed(|req: &Request| req.tenant)
    ///     .max_keys(500)
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok(())
    /// # }
    /// ```
    pub fn keyed<Req, K, F>(self, extract: F) -> KeyedBuilder<F, K, C>
    where
        F: Fn(&Req) -> K,
    {
        KeyedBuilder::new(self, extract)
    }

    /// Validates and splits the builder.
    pub(crate) fn into_parts(
        self,
    ) -> Result<(Config, C, Option<Listener>, Option<BreakerGroup>), ConfigError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.config.validate()?;
        Ok((self.config, self.classify, self.listener, self.group))
    }
}

#[cfg(feature = "serde")]
mod serde_impl {
    //! The serde shape of [`Config`]: every field optional, `false` for a
    //! disabled policy, humantime durations, validation on the way in.

    use std::time::Duration;

    use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
    use watertight_core::backoff::BackoffKind;
    use watertight_core::Backoff;

    use super::{Config, Mode, Window};
    use crate::error::{ConfigError, COMPONENT};

    #[derive(Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct RawBackoff {
        kind: BackoffKind,
        #[serde(with = "humantime_serde")]
        base: Duration,
        #[serde(with = "humantime_serde", default)]
        max: Option<Duration>,
    }

    #[derive(Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub(super) struct RawConfig {
        name: String,
        mode: Mode,
        #[serde(with = "off_f64")]
        failure_rate_threshold: Option<f64>,
        minimum_calls: u64,
        window: Window,
        #[serde(with = "off_duration", skip_serializing_if = "Option::is_none")]
        slow_call_duration: Option<Duration>,
        slow_call_rate_threshold: f64,
        #[serde(with = "off_u32")]
        consecutive_failures: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        open_backoff: Option<RawBackoff>,
        #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
        open_duration: Option<Duration>,
        permitted_probes: u32,
        success_threshold: u32,
        #[serde(with = "off_duration")]
        max_half_open_duration: Option<Duration>,
        #[serde(skip_serializing_if = "Option::is_none")]
        seed: Option<u64>,
    }

    impl Default for RawConfig {
        fn default() -> Self {
            let mut raw = RawConfig::from(Config::default());
            raw.open_backoff = None;
            raw
        }
    }

    impl From<Config> for RawConfig {
        fn from(c: Config) -> Self {
            RawConfig {
                name: c.name,
                mode: c.mode,
                failure_rate_threshold: c.failure_rate_threshold,
                minimum_calls: c.minimum_calls,
                window: c.window,
                slow_call_duration: c.slow_call_duration,
                slow_call_rate_threshold: c.slow_call_rate_threshold,
                consecutive_failures: c.consecutive_failures,
                open_backoff: Some(RawBackoff {
                    kind: c.open_backoff.kind(),
                    base: c.open_backoff.base(),
                    max: Some(c.open_backoff.max()),
                }),
                open_duration: None,
                permitted_probes: c.permitted_probes,
                success_threshold: c.success_threshold,
                max_half_open_duration: c.max_half_open_duration,
                seed: c.seed,
            }
        }
    }

    impl TryFrom<RawConfig> for Config {
        type Error = ConfigError;

        fn try_from(r: RawConfig) -> Result<Self, ConfigError> {
            let open_backoff = match (r.open_backoff, r.open_duration) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        COMPONENT,
                        "open_duration",
                        "must not be set together with `open_backoff`",
                    ))
                }
                (None, Some(d)) => Backoff::constant(d).map_err(|_| {
                    ConfigError::new(COMPONENT, "open_duration", "must be greater than zero")
                })?,
                (Some(b), None) => {
                    let max = match (b.kind, b.max) {
                        (_, Some(max)) => max,
                        (BackoffKind::Constant, None) => b.base,
                        (_, None) => {
                            return Err(ConfigError::new(
                                COMPONENT,
                                "open_backoff.max",
                                "is required",
                            ))
                        }
                    };
                    Backoff::new(b.kind, b.base, max).map_err(|e| {
                        let (field, reason) = match e.field() {
                            "base" => ("open_backoff.base", "must be greater than zero"),
                            _ => ("open_backoff.max", "must not be less than `base`"),
                        };
                        ConfigError::new(COMPONENT, field, reason)
                    })?
                }
                (None, None) => super::default_open_backoff(),
            };
            let c = Config {
                name: r.name,
                mode: r.mode,
                failure_rate_threshold: r.failure_rate_threshold,
                minimum_calls: r.minimum_calls,
                window: r.window,
                slow_call_duration: r.slow_call_duration,
                slow_call_rate_threshold: r.slow_call_rate_threshold,
                consecutive_failures: r.consecutive_failures,
                open_backoff,
                permitted_probes: r.permitted_probes,
                success_threshold: r.success_threshold,
                max_half_open_duration: r.max_half_open_duration,
                seed: r.seed,
            };
            c.validate()?;
            Ok(c)
        }
    }

    /// `Option<T>` written as `T` or `false`.
    macro_rules! off_or {
        ($module:ident, $ty:ty, $expecting:literal, $ser:expr, { $($visit:item)* }) => {
            mod $module {
                use super::*;

                pub(super) fn serialize<S: Serializer>(v: &Option<$ty>, s: S) -> Result<S::Ok, S::Error> {
                    match v {
                        None => s.serialize_bool(false),
                        Some(v) => ($ser)(v, s),
                    }
                }

                pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<$ty>, D::Error> {
                    struct V;
                    impl<'de> de::Visitor<'de> for V {
                        type Value = Option<$ty>;
                        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                            f.write_str(concat!($expecting, " or `false`"))
                        }
                        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                            if v {
                                Err(E::invalid_value(de::Unexpected::Bool(true), &self))
                            } else {
                                Ok(None)
                            }
                        }
                        $($visit)*
                    }
                    d.deserialize_any(V)
                }
            }
        };
    }

    off_or!(
        off_f64,
        f64,
        "a number",
        |v: &f64, s: S| s.serialize_f64(*v),
        {
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Some(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Some(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Some(v as f64))
            }
        }
    );

    off_or!(
        off_u32,
        u32,
        "a count",
        |v: &u32, s: S| s.serialize_u32(*v),
        {
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                u32::try_from(v)
                    .map(Some)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u32::try_from(v)
                    .map(Some)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
        }
    );

    off_or!(
        off_duration,
        Duration,
        "a duration such as \"30s\"",
        |v: &Duration, s: S| s.collect_str(&humantime_serde::re::humantime::format_duration(*v)),
        {
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                humantime_serde::re::humantime::parse_duration(v)
                    .map(Some)
                    .map_err(|e| E::custom(format_args!("invalid duration {v:?}: {e}")))
            }
        }
    );
}
