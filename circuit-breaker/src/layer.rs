use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;
use watertight_core::ErrorsAsFailures;

use crate::breaker::Breaker;
use crate::config::{Builder, Config};
use crate::error::ConfigError;
use crate::event::Listener;
use crate::group::BreakerGroup;
use crate::handle::CircuitBreakerHandle;
use crate::service::CircuitBreaker;

/// Wraps services in a [`CircuitBreaker`].
///
/// # Clone
///
/// The layer is configuration: each service it wraps gets a breaker of its
/// own (what a per-endpoint breaker under a balancer wants), and clones of
/// that service share it. A layer from [`shared`](Self::shared) instead
/// wraps every service in one breaker.
pub struct CircuitBreakerLayer<C = ErrorsAsFailures> {
    config: Arc<Config>,
    classify: C,
    listener: Option<Listener>,
    shared: Option<Arc<Breaker>>,
    group: Option<BreakerGroup>,
}

impl<C: Clone> Clone for CircuitBreakerLayer<C> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer {
            config: self.config.clone(),
            classify: self.classify.clone(),
            listener: self.listener.clone(),
            shared: self.shared.clone(),
            group: self.group.clone(),
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("config", &self.config)
            .field("classify", &self.classify)
            .field("on_event", &self.listener.is_some())
            .field("shared", &self.shared.is_some())
            .field("group", &self.group)
            .finish()
    }
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        CircuitBreakerLayer::new()
    }
}

impl CircuitBreakerLayer {
    /// A layer with the defaults of [`Config`].
    pub fn new() -> Self {
        Self::from_parts(Config::default(), ErrorsAsFailures, None)
    }

    /// A builder starting from the defaults of [`Config`].
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// A layer from a configuration (read with serde, say).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field; see
    /// [`Config::validate`].
    pub fn from_config(config: Config) -> Result<Self, ConfigError> {
        Builder::new().config(config).build()
    }
}

impl<C> CircuitBreakerLayer<C> {
    pub(crate) fn from_parts(config: Config, classify: C, listener: Option<Listener>) -> Self {
        CircuitBreakerLayer {
            config: Arc::new(config),
            classify,
            listener,
            shared: None,
            group: None,
        }
    }

    pub(crate) fn with_group(mut self, group: Option<BreakerGroup>) -> Self {
        self.group = group;
        self
    }

    /// The group its breakers join, if any.
    pub fn group(&self) -> Option<&BreakerGroup> {
        self.group.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Creates one breaker and returns a layer that wraps every service in
    /// it, with the breaker's handle.
    pub fn shared(&self) -> (Self, CircuitBreakerHandle)
    where
        C: Clone,
    {
        let breaker = self.new_breaker(None);
        let handle = CircuitBreakerHandle::new(breaker.clone());
        let layer = CircuitBreakerLayer {
            config: self.config.clone(),
            classify: self.classify.clone(),
            listener: self.listener.clone(),
            shared: Some(breaker),
            group: self.group.clone(),
        };
        (layer, handle)
    }

    pub(crate) fn new_breaker(&self, key: Option<Arc<str>>) -> Arc<Breaker> {
        Arc::new(Breaker::new(
            &self.config,
            self.listener.clone(),
            key,
            self.group.clone(),
        ))
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        let breaker = match &self.shared {
            Some(b) => b.clone(),
            None => self.new_breaker(None),
        };
        CircuitBreaker::from_parts(inner, breaker, self.classify.clone())
    }
}
