//! Configuration of [`Bulkhead`](crate::Bulkhead): [`BulkheadConfig`],
//! validated by [`BulkheadConfig::validate`], built with a [`BulkheadBuilder`]
//! or read with serde (feature `serde`); and the [`Mode`] and [`Order`] every
//! queueing limiter shares.

use std::fmt;
use std::time::Duration;

use watertight_core::config;

use crate::error::check::{self, COMPONENT};
use crate::error::ConfigError;
use crate::event::{Event, Listener};
use crate::layer::BulkheadLayer;

/// What a full limiter does to `poll_ready`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Mode {
    /// `poll_ready` is `Ready`; a call that finds no permit (after waiting
    /// up to `max_wait` in the queue, if there is one) fails with
    /// [`error::Full`](crate::error::Full). For limiters in front of a
    /// caller that handles the error: a server answering `503`, a client
    /// with a fallback.
    #[default]
    FailFast,
    /// `poll_ready` is `Pending` until a permit is free, and the task is
    /// woken exactly when one is handed to it; nothing is rejected, and
    /// `max_queue` and `max_wait` do not apply. For per-endpoint limiters
    /// under a load balancer, which then skips the busy endpoint.
    Backpressure,
}

/// Which waiter a freed permit goes to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Order {
    /// The one that waited longest.
    #[default]
    Fifo,
    /// The one that arrived last. Under sustained overload a FIFO queue
    /// serves only requests that have waited longest, whose callers are the
    /// likeliest to have given up already; LIFO serves the freshest, so
    /// some requests keep meeting their deadlines while the oldest time
    /// out (Facebook's adaptive LIFO, "Fail at Scale", ACM Queue 2015).
    /// Facebook pairs it with CoDel-style short queue timeouts; here the
    /// queue timeout is the fixed `max_wait`, so keep it short with LIFO.
    Lifo,
}

/// A [`Bulkhead`](crate::Bulkhead)'s configuration.
///
/// | field | default |
/// |---|---|
/// | `name` | `"bulkhead"` |
/// | `max_concurrent` | 100 |
/// | `max_queue` | 0 (reject at once when full) |
/// | `max_wait` | 1 s |
/// | `order` | [`Order::Fifo`] |
/// | `mode` | [`Mode::FailFast`] |
/// | `retry_after` | 1 s |
///
/// With feature `serde` it deserializes from (TOML shown; every field is
/// optional) and is validated on the way in, with an error naming the field:
///
/// ```toml
/// name = "payments-db"
/// max_concurrent = 32
/// max_queue = 64
/// max_wait = "250ms"
/// order = "lifo"          # or "fifo"
/// mode = "fail_fast"      # or "backpressure"
/// retry_after = "2s"
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct BulkheadConfig {
    /// The instance name: the `name` label of its metrics and the `name`
    /// field of its traces and events. Not empty.
    pub name: String,
    /// Calls in flight at once, `1..=2^30`; changes at run time through
    /// [`BulkheadHandle::resize`](crate::BulkheadHandle::resize).
    pub max_concurrent: u32,
    /// Requests that may wait for a permit when all are taken, at most
    /// `2^30`; 0 rejects at once. [`Mode::FailFast`] only.
    pub max_queue: u32,
    /// How long a queued request waits before it is rejected; not zero.
    /// [`Mode::FailFast`] only. The wait is a Tokio timer: a bulkhead with
    /// a queue runs inside a Tokio runtime with time enabled.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_wait: Duration,
    /// Which waiter a freed permit goes to.
    pub order: Order,
    /// What a full bulkhead does to `poll_ready`.
    pub mode: Mode,
    /// The hint rejections carry ([`Full::retry_after`](crate::error::Full::retry_after)).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub retry_after: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        BulkheadConfig {
            name: "bulkhead".to_owned(),
            max_concurrent: 100,
            max_queue: 0,
            max_wait: Duration::from_secs(1),
            order: Order::Fifo,
            mode: Mode::FailFast,
            retry_after: Duration::from_secs(1),
        }
    }
}

impl BulkheadConfig {
    /// Checks every rule:
    ///
    /// - `name` is not empty;
    /// - `max_concurrent` is in `1..=2^30`;
    /// - `max_queue` is at most `2^30`;
    /// - `max_wait` is not zero.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that breaks a rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        config::name(COMPONENT, &self.name)?;
        check::limit("max_concurrent", self.max_concurrent)?;
        check::queue(self.max_queue, self.max_wait)
    }
}

validated_serde!(BulkheadConfig);

/// Builds a [`BulkheadLayer`]; see [`BulkheadConfig`] for every field and
/// its default.
///
/// Setters never fail; [`build`](Self::build) validates and names the first
/// field at fault.
#[derive(Default)]
pub struct BulkheadBuilder {
    config: BulkheadConfig,
    listener: Option<Listener>,
}

impl fmt::Debug for BulkheadBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadBuilder")
            .field("config", &self.config)
            .field("on_event", &self.listener.is_some())
            .finish()
    }
}

impl BulkheadBuilder {
    /// A builder with the defaults of [`BulkheadConfig`].
    pub fn new() -> Self {
        BulkheadBuilder::default()
    }

    /// Starts from `config` instead of the defaults (later setters still
    /// apply).
    pub fn config(mut self, config: BulkheadConfig) -> Self {
        self.config = config;
        self
    }

    /// The instance name (default `bulkhead`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Calls in flight at once (default 100).
    pub fn max_concurrent(mut self, max: u32) -> Self {
        self.config.max_concurrent = max;
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
    /// A [`ConfigError`] naming the first invalid field; see
    /// [`BulkheadConfig::validate`].
    pub fn build(self) -> Result<BulkheadLayer, ConfigError> {
        self.config.validate()?;
        Ok(BulkheadLayer::from_parts(self.config, self.listener))
    }
}
