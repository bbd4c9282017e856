//! Configuration of [`AdaptiveConcurrency`](crate::AdaptiveConcurrency):
//! the [`AdaptiveBuilder`], and [`AdaptiveConfig`] for configuration files.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use watertight_core::config;
use watertight_core::ErrorsAsFailures;

use crate::config::{Mode, Order};
use crate::error::check::{self, COMPONENT};
use crate::error::ConfigError;
use crate::event::{Event, Listener};
use crate::layer::AdaptiveConcurrencyLayer;
use crate::limit::{
    Aimd, AimdConfig, EnvoyGradient, EnvoyGradientConfig, Gradient2, Gradient2Config,
    LimitAlgorithm, Vegas, VegasConfig, WindowConfig, Windowed,
};

/// Makes a fresh algorithm for each limiter a layer builds.
pub(crate) type Factory = Arc<dyn Fn() -> Box<dyn LimitAlgorithm> + Send + Sync>;

/// Which limit algorithm, with its configuration, for configuration files.
///
/// In TOML, a table with a `kind` and the algorithm's fields (all optional):
///
/// ```toml
/// [algorithm]
/// kind = "vegas"        # "aimd", "vegas", "gradient2" or "envoy"
/// alpha = 3
/// beta = 6
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum AlgorithmConfig {
    /// [`Aimd`].
    Aimd(AimdConfig),
    /// [`Vegas`].
    Vegas(VegasConfig),
    /// [`Gradient2`].
    Gradient2(Gradient2Config),
    /// [`EnvoyGradient`].
    Envoy(EnvoyGradientConfig),
}

impl Default for AlgorithmConfig {
    /// [`Vegas`] with Netflix's defaults; see [`limit`](crate::limit#choosing)
    /// for why.
    fn default() -> Self {
        AlgorithmConfig::Vegas(VegasConfig::default())
    }
}

impl AlgorithmConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        match self {
            AlgorithmConfig::Aimd(c) => c.validate(),
            AlgorithmConfig::Vegas(c) => c.validate(),
            AlgorithmConfig::Gradient2(c) => c.validate(),
            AlgorithmConfig::Envoy(c) => c.validate(),
        }
    }

    /// A fresh algorithm, windowed if `window` is given.
    fn build(&self, window: Option<&WindowConfig>) -> Result<Box<dyn LimitAlgorithm>, ConfigError> {
        fn boxed<A: LimitAlgorithm>(
            a: A,
            window: Option<&WindowConfig>,
        ) -> Result<Box<dyn LimitAlgorithm>, ConfigError> {
            Ok(match window {
                Some(w) => Box::new(Windowed::new(a, w.clone())?),
                None => Box::new(a),
            })
        }
        match self {
            AlgorithmConfig::Aimd(c) => boxed(Aimd::new(c.clone())?, window),
            AlgorithmConfig::Vegas(c) => boxed(Vegas::new(c.clone())?, window),
            AlgorithmConfig::Gradient2(c) => boxed(Gradient2::new(c.clone())?, window),
            AlgorithmConfig::Envoy(c) => boxed(EnvoyGradient::new(c.clone())?, window),
        }
    }

    fn is_envoy(&self) -> bool {
        matches!(self, AlgorithmConfig::Envoy(_))
    }
}

/// An [`AdaptiveConcurrency`](crate::AdaptiveConcurrency)'s configuration,
/// for configuration files; in code the [`AdaptiveBuilder`] takes any
/// [`LimitAlgorithm`].
///
/// | field | default |
/// |---|---|
/// | `name` | `"adaptive_concurrency"` |
/// | `algorithm` | [`Vegas`] with Netflix's defaults ([why](crate::limit#choosing)) |
/// | `window` | Netflix's window (1 s, 10 samples, average) for AIMD, Vegas and Gradient2; none for Envoy's controller |
/// | `max_queue` | 0 (reject at once when full) |
/// | `max_wait` | 1 s |
/// | `order` | [`Order::Fifo`] |
/// | `mode` | [`Mode::FailFast`] |
/// | `retry_after` | 1 s |
///
/// With feature `serde` (TOML shown; every field is optional, `window =
/// false` turns windowing off):
///
/// ```toml
/// name = "api"
/// max_queue = 50
/// max_wait = "100ms"
/// order = "lifo"
/// retry_after = "1s"
/// window = { min_window = "500ms", max_window = "2s", min_samples = 20, percentile = 0.9 }
///
/// [algorithm]
/// kind = "gradient2"
/// min_limit = 10
/// max_limit = 500
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        try_from = "serde_impl::RawAdaptiveConfig",
        into = "serde_impl::RawAdaptiveConfig"
    )
)]
#[non_exhaustive]
pub struct AdaptiveConfig {
    /// The instance name: the `name` label of its metrics and the `name`
    /// field of its traces and events. Not empty.
    pub name: String,
    /// The limit algorithm.
    pub algorithm: AlgorithmConfig,
    /// Windowing of the samples ([`Windowed`]); must be `None` for Envoy's
    /// controller, which aggregates its own.
    pub window: Option<WindowConfig>,
    /// Requests that may wait for a permit, at most `2^30`. [`Mode::FailFast`]
    /// only.
    pub max_queue: u32,
    /// How long a queued request waits; not zero. [`Mode::FailFast`] only.
    pub max_wait: Duration,
    /// Which waiter a freed permit goes to.
    pub order: Order,
    /// What a full limiter does to `poll_ready`.
    pub mode: Mode,
    /// The hint rejections carry.
    pub retry_after: Duration,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            name: "adaptive_concurrency".to_owned(),
            algorithm: AlgorithmConfig::default(),
            window: Some(WindowConfig::default()),
            max_queue: 0,
            max_wait: Duration::from_secs(1),
            order: Order::Fifo,
            mode: Mode::FailFast,
            retry_after: Duration::from_secs(1),
        }
    }
}

impl AdaptiveConfig {
    /// Checks every rule: the name is not empty, the algorithm's and the
    /// window's own rules (fields named `algorithm.…` and `window.…`), no
    /// window around Envoy's controller, `max_queue` at most `2^30`,
    /// `max_wait` not zero.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that breaks a rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        config::name(COMPONENT, &self.name)?;
        self.algorithm
            .validate()
            .map_err(|e| e.within(COMPONENT, "algorithm"))?;
        if let Some(w) = &self.window {
            w.validate().map_err(|e| e.within(COMPONENT, "window"))?;
            if self.algorithm.is_envoy() {
                return Err(check::invalid(
                    "window",
                    "must be off for the `envoy` algorithm, which aggregates its own samples",
                ));
            }
        }
        check::queue(self.max_queue, self.max_wait)
    }

    fn factory(&self) -> Factory {
        let algorithm = self.algorithm.clone();
        let window = self.window.clone();
        Arc::new(move || {
            algorithm
                .build(window.as_ref())
                .expect("validated when the layer was built")
        })
    }
}

/// Builds an [`AdaptiveConcurrencyLayer`].
///
/// The defaults are those of [`AdaptiveConfig`]: [`Vegas`] windowed as
/// Netflix's `WindowedLimit`, fail-fast, no queue. Setters never fail;
/// [`build`](Self::build) validates and names the first field at fault.
pub struct AdaptiveBuilder<C = ErrorsAsFailures> {
    config: AdaptiveConfig,
    /// An algorithm given in code, instead of `config.algorithm`.
    algorithm: Option<(Factory, String)>,
    classify: C,
    listener: Option<Listener>,
}

impl<C: fmt::Debug> fmt::Debug for AdaptiveBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("AdaptiveBuilder");
        d.field("config", &self.config);
        if let Some((_, name)) = &self.algorithm {
            d.field("algorithm", name);
        }
        d.field("classify", &self.classify)
            .field("on_event", &self.listener.is_some())
            .finish()
    }
}

impl Default for AdaptiveBuilder {
    fn default() -> Self {
        AdaptiveBuilder::new()
    }
}

impl AdaptiveBuilder {
    /// A builder with the defaults of [`AdaptiveConfig`] and
    /// [`ErrorsAsFailures`].
    pub fn new() -> Self {
        AdaptiveBuilder {
            config: AdaptiveConfig::default(),
            algorithm: None,
            classify: ErrorsAsFailures,
            listener: None,
        }
    }
}

impl<C> AdaptiveBuilder<C> {
    /// Starts from `config` instead of the defaults, algorithm included
    /// (later setters still apply).
    pub fn config(mut self, config: AdaptiveConfig) -> Self {
        self.config = config;
        self.algorithm = None;
        self
    }

    /// The instance name (default `adaptive_concurrency`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// The limit algorithm, used as given: wrap it in [`Windowed`] to
    /// aggregate samples (the `window` of a [`config`](Self::config) applies
    /// to the configured algorithm only). Each limiter the layer builds
    /// starts from a clone of it, so pass one that has seen no sample.
    pub fn algorithm<A>(mut self, algorithm: A) -> Self
    where
        A: LimitAlgorithm + Clone + Sync + fmt::Debug,
    {
        let name = format!("{algorithm:?}");
        let factory: Factory = Arc::new(move || Box::new(algorithm.clone()));
        self.algorithm = Some((factory, name));
        self
    }

    /// Requests that may wait for a permit (default 0: reject at once).
    pub fn max_queue(mut self, max: u32) -> Self {
        self.config.max_queue = max;
        self
    }

    /// How long a queued request waits before it is rejected (default 1 s).
    pub fn max_wait(mut self, max: Duration) -> Self {
        self.config.max_wait = max;
        self
    }

    /// Which waiter a freed permit goes to (default [`Order::Fifo`]).
    pub fn order(mut self, order: Order) -> Self {
        self.config.order = order;
        self
    }

    /// [`Mode::FailFast`] (default) or [`Mode::Backpressure`].
    pub fn mode(mut self, mode: Mode) -> Self {
        self.config.mode = mode;
        self
    }

    /// The hint rejections carry (default 1 s).
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.config.retry_after = retry_after;
        self
    }

    /// How results are judged (default [`ErrorsAsFailures`]): a retryable
    /// [`Failure`](watertight_core::ResponseClass::Failure) is a drop, a
    /// success an RTT sample; a failure that is not retryable (the service
    /// answered, wrongly) and an
    /// [`Ignored`](watertight_core::ResponseClass::Ignored) result are not
    /// samples. Cloned into every response future.
    pub fn classify<C2>(self, classify: C2) -> AdaptiveBuilder<C2> {
        AdaptiveBuilder {
            config: self.config,
            algorithm: self.algorithm,
            classify,
            listener: self.listener,
        }
    }

    /// Calls `listener` with every [`Event`]; see [`event`](crate::event).
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
    /// [`AdaptiveConfig::validate`].
    pub fn build(self) -> Result<AdaptiveConcurrencyLayer<C>, ConfigError> {
        let factory = match self.algorithm {
            Some((factory, _)) => {
                config::name(COMPONENT, &self.config.name)?;
                check::queue(self.config.max_queue, self.config.max_wait)?;
                factory
            }
            None => {
                self.config.validate()?;
                self.config.factory()
            }
        };
        Ok(AdaptiveConcurrencyLayer::from_parts(
            self.config,
            factory,
            self.classify,
            self.listener,
        ))
    }
}

#[cfg(feature = "serde")]
mod serde_impl {
    //! The serde shape of [`AdaptiveConfig`]: every field optional, the
    //! window on by default except around Envoy's controller, `false` to
    //! turn it off, validation on the way in.

    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, MapAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{AdaptiveConfig, AlgorithmConfig, Mode, Order, WindowConfig};
    use crate::error::ConfigError;

    /// A window, or `false` for none.
    pub(super) enum WindowSetting {
        Off,
        On(WindowConfig),
    }

    impl<'de> Deserialize<'de> for WindowSetting {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = WindowSetting;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a window table, `true` for the default window, or `false`")
                }

                fn visit_bool<E: de::Error>(self, on: bool) -> Result<Self::Value, E> {
                    Ok(if on {
                        WindowSetting::On(WindowConfig::default())
                    } else {
                        WindowSetting::Off
                    })
                }

                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                    WindowConfig::deserialize(de::value::MapAccessDeserializer::new(map))
                        .map(WindowSetting::On)
                }
            }
            d.deserialize_any(V)
        }
    }

    impl Serialize for WindowSetting {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self {
                WindowSetting::Off => s.serialize_bool(false),
                WindowSetting::On(w) => w.serialize(s),
            }
        }
    }

    #[derive(Deserialize, Serialize)]
    #[serde(default, deny_unknown_fields)]
    pub(super) struct RawAdaptiveConfig {
        name: String,
        algorithm: AlgorithmConfig,
        #[serde(skip_serializing_if = "Option::is_none")]
        window: Option<WindowSetting>,
        max_queue: u32,
        #[serde(with = "humantime_serde")]
        max_wait: Duration,
        order: Order,
        mode: Mode,
        #[serde(with = "humantime_serde")]
        retry_after: Duration,
    }

    impl Default for RawAdaptiveConfig {
        fn default() -> Self {
            let mut raw = RawAdaptiveConfig::from(AdaptiveConfig::default());
            raw.window = None;
            raw
        }
    }

    impl From<AdaptiveConfig> for RawAdaptiveConfig {
        fn from(c: AdaptiveConfig) -> Self {
            RawAdaptiveConfig {
                name: c.name,
                algorithm: c.algorithm,
                window: Some(match c.window {
                    Some(w) => WindowSetting::On(w),
                    None => WindowSetting::Off,
                }),
                max_queue: c.max_queue,
                max_wait: c.max_wait,
                order: c.order,
                mode: c.mode,
                retry_after: c.retry_after,
            }
        }
    }

    impl TryFrom<RawAdaptiveConfig> for AdaptiveConfig {
        type Error = ConfigError;

        fn try_from(r: RawAdaptiveConfig) -> Result<Self, ConfigError> {
            let window = match r.window {
                None if r.algorithm.is_envoy() => None,
                None => Some(WindowConfig::default()),
                Some(WindowSetting::Off) => None,
                Some(WindowSetting::On(w)) => Some(w),
            };
            let c = AdaptiveConfig {
                name: r.name,
                algorithm: r.algorithm,
                window,
                max_queue: r.max_queue,
                max_wait: r.max_wait,
                order: r.order,
                mode: r.mode,
                retry_after: r.retry_after,
            };
            c.validate()?;
            Ok(c)
        }
    }
}
