//! The layers: configuration only, each [`Layer::layer`] call building a
//! limiter of its own (unless the layer is [`shared`](BulkheadLayer::shared)).

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;
use watertight_core::ErrorsAsFailures;

use crate::adaptive::{AdaptiveBuilder, AdaptiveConfig, Factory};
use crate::admission::{AdmissionBuilder, AdmissionConfig, AdmissionHandle, Throttle};
use crate::config::{BulkheadBuilder, BulkheadConfig};
use crate::error::ConfigError;
use crate::event::Listener;
use crate::handle::{AdaptiveHandle, BulkheadHandle};
use crate::limiter::{Limiter, Params};
use crate::partition::{
    PartitionedBuilder, PartitionedConfig, PartitionedHandle, Partitions, Unpartitioned,
};
use crate::service::{AdaptiveConcurrency, Admission, Bulkhead, PartitionedBulkhead};

/// Wraps services in a [`Bulkhead`].
///
/// # Clone
///
/// The layer is configuration: each service it wraps gets a bulkhead of its
/// own (a per-endpoint bulkhead under a balancer), and clones of that
/// service share it. A layer from [`shared`](Self::shared) wraps every
/// service in one bulkhead.
#[derive(Clone)]
pub struct BulkheadLayer {
    config: Arc<BulkheadConfig>,
    listener: Option<Listener>,
    shared: Option<Arc<Limiter>>,
}

impl fmt::Debug for BulkheadLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadLayer")
            .field("config", &self.config)
            .field("on_event", &self.listener.is_some())
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl Default for BulkheadLayer {
    /// The defaults of [`BulkheadConfig`]: 100 in flight, no queue.
    fn default() -> Self {
        BulkheadLayer::from_parts(BulkheadConfig::default(), None)
    }
}

impl BulkheadLayer {
    /// A builder starting from the defaults of [`BulkheadConfig`].
    pub fn builder() -> BulkheadBuilder {
        BulkheadBuilder::new()
    }

    /// A layer from a configuration (read with serde, say).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field; see
    /// [`BulkheadConfig::validate`].
    pub fn from_config(config: BulkheadConfig) -> Result<Self, ConfigError> {
        BulkheadBuilder::new().config(config).build()
    }

    pub(crate) fn from_parts(config: BulkheadConfig, listener: Option<Listener>) -> Self {
        BulkheadLayer {
            config: Arc::new(config),
            listener,
            shared: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BulkheadConfig {
        &self.config
    }

    /// Creates one bulkhead and returns a layer that wraps every service in
    /// it, with the bulkhead's handle.
    pub fn shared(&self) -> (Self, BulkheadHandle) {
        let limiter = self.new_limiter();
        let handle = BulkheadHandle {
            limiter: limiter.clone(),
        };
        let layer = BulkheadLayer {
            shared: Some(limiter),
            ..self.clone()
        };
        (layer, handle)
    }

    fn new_limiter(&self) -> Arc<Limiter> {
        let c = &self.config;
        Arc::new(Limiter::new(
            Params {
                name: c.name.clone(),
                component: "bulkhead",
                limit: c.max_concurrent,
                mode: c.mode,
                max_queue: c.max_queue,
                max_wait: c.max_wait,
                order: c.order,
                retry_after: c.retry_after,
                listener: self.listener.clone(),
            },
            None,
        ))
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let limiter = self.shared.clone().unwrap_or_else(|| self.new_limiter());
        Bulkhead::from_parts(inner, limiter)
    }
}

/// Wraps services in an [`AdaptiveConcurrency`].
///
/// # Clone
///
/// The layer is configuration: each service it wraps gets a limiter (and a
/// fresh algorithm) of its own, and clones of that service share it. A
/// layer from [`shared`](Self::shared) wraps every service in one limiter.
#[derive(Clone)]
pub struct AdaptiveConcurrencyLayer<C = ErrorsAsFailures> {
    config: Arc<AdaptiveConfig>,
    factory: Factory,
    classify: C,
    listener: Option<Listener>,
    shared: Option<Arc<Limiter>>,
}

impl<C: fmt::Debug> fmt::Debug for AdaptiveConcurrencyLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveConcurrencyLayer")
            .field("config", &self.config)
            .field("classify", &self.classify)
            .field("on_event", &self.listener.is_some())
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl Default for AdaptiveConcurrencyLayer {
    /// [`Vegas`](crate::limit::Vegas), windowed, with Netflix's defaults;
    /// fail-fast, no queue.
    fn default() -> Self {
        AdaptiveBuilder::new()
            .build()
            .expect("the defaults are valid")
    }
}

impl AdaptiveConcurrencyLayer {
    /// A builder starting from the defaults of [`AdaptiveConfig`].
    pub fn builder() -> AdaptiveBuilder {
        AdaptiveBuilder::new()
    }

    /// A layer from a configuration (read with serde, say).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field; see
    /// [`AdaptiveConfig::validate`].
    pub fn from_config(config: AdaptiveConfig) -> Result<Self, ConfigError> {
        AdaptiveBuilder::new().config(config).build()
    }
}

impl<C> AdaptiveConcurrencyLayer<C> {
    pub(crate) fn from_parts(
        config: AdaptiveConfig,
        factory: Factory,
        classify: C,
        listener: Option<Listener>,
    ) -> Self {
        AdaptiveConcurrencyLayer {
            config: Arc::new(config),
            factory,
            classify,
            listener,
            shared: None,
        }
    }

    /// The configuration (its `algorithm` is not the one used when the
    /// builder was given an algorithm in code).
    pub fn config(&self) -> &AdaptiveConfig {
        &self.config
    }

    /// Creates one limiter and returns a layer that wraps every service in
    /// it, with the limiter's handle.
    pub fn shared(&self) -> (Self, AdaptiveHandle)
    where
        C: Clone,
    {
        let limiter = self.new_limiter();
        let handle = AdaptiveHandle {
            limiter: limiter.clone(),
        };
        let layer = AdaptiveConcurrencyLayer {
            shared: Some(limiter),
            ..self.clone()
        };
        (layer, handle)
    }

    fn new_limiter(&self) -> Arc<Limiter> {
        let c = &self.config;
        Arc::new(Limiter::new(
            Params {
                name: c.name.clone(),
                component: "adaptive_concurrency",
                // Replaced by the algorithm's initial limit.
                limit: 1,
                mode: c.mode,
                max_queue: c.max_queue,
                max_wait: c.max_wait,
                order: c.order,
                retry_after: c.retry_after,
                listener: self.listener.clone(),
            },
            Some((self.factory)()),
        ))
    }
}

impl<S, C: Clone> Layer<S> for AdaptiveConcurrencyLayer<C> {
    type Service = AdaptiveConcurrency<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        let limiter = self.shared.clone().unwrap_or_else(|| self.new_limiter());
        AdaptiveConcurrency::from_parts(inner, limiter, self.classify.clone())
    }
}

/// Wraps services in a [`PartitionedBulkhead`].
///
/// # Clone
///
/// The layer is configuration: each service it wraps gets a bulkhead of its
/// own, and clones of that service share it. A layer from
/// [`shared`](Self::shared) wraps every service in one bulkhead.
#[derive(Clone)]
pub struct PartitionedBulkheadLayer<P = Unpartitioned> {
    config: Arc<PartitionedConfig>,
    partitioner: P,
    listener: Option<Listener>,
    shared: Option<Arc<Partitions>>,
}

impl<P: fmt::Debug> fmt::Debug for PartitionedBulkheadLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionedBulkheadLayer")
            .field("config", &self.config)
            .field("partitioner", &self.partitioner)
            .field("on_event", &self.listener.is_some())
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl PartitionedBulkheadLayer {
    /// A builder starting from the defaults of [`PartitionedConfig`].
    pub fn builder() -> PartitionedBuilder {
        PartitionedBuilder::new()
    }
}

impl<P> PartitionedBulkheadLayer<P> {
    pub(crate) fn from_parts(
        config: PartitionedConfig,
        partitioner: P,
        listener: Option<Listener>,
    ) -> Self {
        PartitionedBulkheadLayer {
            config: Arc::new(config),
            partitioner,
            listener,
            shared: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PartitionedConfig {
        &self.config
    }

    /// Creates one bulkhead and returns a layer that wraps every service in
    /// it, with the bulkhead's handle.
    pub fn shared(&self) -> (Self, PartitionedHandle)
    where
        P: Clone,
    {
        let partitions = self.new_partitions();
        let handle = PartitionedHandle {
            partitions: partitions.clone(),
        };
        let layer = PartitionedBulkheadLayer {
            shared: Some(partitions),
            ..self.clone()
        };
        (layer, handle)
    }

    fn new_partitions(&self) -> Arc<Partitions> {
        Arc::new(Partitions::new(&self.config, self.listener.clone()))
    }
}

impl<S, P: Clone> Layer<S> for PartitionedBulkheadLayer<P> {
    type Service = PartitionedBulkhead<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        let partitions = self.shared.clone().unwrap_or_else(|| self.new_partitions());
        PartitionedBulkhead::from_parts(inner, partitions, self.partitioner.clone())
    }
}

/// Wraps services in an [`Admission`] throttle.
///
/// # Clone
///
/// The layer is configuration: each service it wraps gets a window of its
/// own, and clones of that service share it. A layer from
/// [`shared`](Self::shared) wraps every service in one.
#[derive(Clone)]
pub struct AdmissionLayer<C = ErrorsAsFailures> {
    config: Arc<AdmissionConfig>,
    classify: C,
    listener: Option<Listener>,
    shared: Option<Arc<Throttle>>,
}

impl<C: fmt::Debug> fmt::Debug for AdmissionLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmissionLayer")
            .field("config", &self.config)
            .field("classify", &self.classify)
            .field("on_event", &self.listener.is_some())
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl Default for AdmissionLayer {
    /// The defaults of [`AdmissionConfig`]: K = 2 over 30 s, at most 0.8.
    fn default() -> Self {
        AdmissionLayer::from_parts(AdmissionConfig::default(), ErrorsAsFailures, None)
    }
}

impl AdmissionLayer {
    /// A builder starting from the defaults of [`AdmissionConfig`].
    pub fn builder() -> AdmissionBuilder {
        AdmissionBuilder::new()
    }

    /// A layer from a configuration (read with serde, say).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field; see
    /// [`AdmissionConfig::validate`].
    pub fn from_config(config: AdmissionConfig) -> Result<Self, ConfigError> {
        AdmissionBuilder::new().config(config).build()
    }
}

impl<C> AdmissionLayer<C> {
    pub(crate) fn from_parts(
        config: AdmissionConfig,
        classify: C,
        listener: Option<Listener>,
    ) -> Self {
        AdmissionLayer {
            config: Arc::new(config),
            classify,
            listener,
            shared: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// Creates one window and returns a layer that wraps every service in
    /// it, with its handle.
    pub fn shared(&self) -> (Self, AdmissionHandle)
    where
        C: Clone,
    {
        let throttle = self.new_throttle();
        let handle = AdmissionHandle {
            throttle: throttle.clone(),
        };
        let layer = AdmissionLayer {
            shared: Some(throttle),
            ..self.clone()
        };
        (layer, handle)
    }

    fn new_throttle(&self) -> Arc<Throttle> {
        Arc::new(Throttle::new(&self.config, self.listener.clone()))
    }
}

impl<S, C: Clone> Layer<S> for AdmissionLayer<C> {
    type Service = Admission<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        let throttle = self.shared.clone().unwrap_or_else(|| self.new_throttle());
        Admission::from_parts(inner, throttle, self.classify.clone())
    }
}
