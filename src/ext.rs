//! [`ServiceBuilderExt`]: one `tower::ServiceBuilder` method per watertight
//! layer.

#[cfg(any(
    feature = "circuit-breaker",
    feature = "retry",
    feature = "bulkhead",
    feature = "chaos",
    feature = "loadbalance"
))]
use tower::layer::util::Stack;
use tower::ServiceBuilder;

/// Adds watertight's layers to a [`ServiceBuilder`] by name, each behind
/// the feature of its crate. Each method takes the layer its crate's
/// builder made (configuration stays with the layer), so
/// `.circuit_breaker(b)` reads as `.layer(b)` with the layer's name on it;
/// the names do not clash with `ServiceBuilder`'s own (`retry`,
/// `concurrency_limit`, `timeout`…).
///
/// Layers listed first wrap those listed after them; the [stack](crate::stack)
/// docs give the order the anchors use and why.
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use watertight::ServiceBuilderExt;
/// use watertight::bulkhead::AdaptiveConcurrencyLayer;
/// use watertight::circuit_breaker::CircuitBreakerLayer;
/// use watertight::retry::RetryLayer;
/// use watertight::retry::policy::AllRequests;
///
/// # fn main() -> Result<(), watertight::core::BoxError> {
/// let client = ServiceBuilder::new()
///     .adaptive_concurrency(AdaptiveConcurrencyLayer::builder().build()?)
///     .budgeted_retry(RetryLayer::builder().idempotency(AllRequests).build()?)
///     .circuit_breaker(CircuitBreakerLayer::builder().build()?)
///     .timeout(Duration::from_millis(250))
///     .service_fn(|_: http::Request<()>| async { Ok::<_, watertight::core::BoxError>(http::Response::new(())) });
/// # let _ = client; Ok(()) }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed {
    /// Adds a [`CircuitBreakerLayer`](crate::circuit_breaker::CircuitBreakerLayer).
    #[cfg(feature = "circuit-breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
    fn circuit_breaker<C>(
        self,
        layer: crate::circuit_breaker::CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<Stack<crate::circuit_breaker::CircuitBreakerLayer<C>, L>>;

    /// Adds a [`KeyedCircuitBreakerLayer`](crate::circuit_breaker::KeyedCircuitBreakerLayer):
    /// one breaker per key of the request.
    #[cfg(feature = "circuit-breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
    fn keyed_circuit_breaker<F, K, C>(
        self,
        layer: crate::circuit_breaker::KeyedCircuitBreakerLayer<F, K, C>,
    ) -> ServiceBuilder<Stack<crate::circuit_breaker::KeyedCircuitBreakerLayer<F, K, C>, L>>;

    /// Adds a [`RetryLayer`](crate::retry::RetryLayer): retries within a
    /// budget, the overall deadline and per-try timeout. (Not `retry`:
    /// `ServiceBuilder` has a method of that name for tower's own retry.)
    #[cfg(feature = "retry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
    fn budgeted_retry<B, P>(
        self,
        layer: crate::retry::RetryLayer<B, P>,
    ) -> ServiceBuilder<Stack<crate::retry::RetryLayer<B, P>, L>>;

    /// Adds a [`HedgeLayer`](crate::retry::hedge::HedgeLayer): backup
    /// requests at a latency percentile.
    #[cfg(feature = "retry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
    fn hedge<B, P>(
        self,
        layer: crate::retry::hedge::HedgeLayer<B, P>,
    ) -> ServiceBuilder<Stack<crate::retry::hedge::HedgeLayer<B, P>, L>>;

    /// Adds a [`BulkheadLayer`](crate::bulkhead::BulkheadLayer): a static
    /// concurrency limit with an optional queue.
    #[cfg(feature = "bulkhead")]
    #[cfg_attr(docsrs, doc(cfg(feature = "bulkhead")))]
    fn bulkhead(
        self,
        layer: crate::bulkhead::BulkheadLayer,
    ) -> ServiceBuilder<Stack<crate::bulkhead::BulkheadLayer, L>>;

    /// Adds a [`PartitionedBulkheadLayer`](crate::bulkhead::PartitionedBulkheadLayer).
    #[cfg(feature = "bulkhead")]
    #[cfg_attr(docsrs, doc(cfg(feature = "bulkhead")))]
    fn partitioned_bulkhead<P>(
        self,
        layer: crate::bulkhead::PartitionedBulkheadLayer<P>,
    ) -> ServiceBuilder<Stack<crate::bulkhead::PartitionedBulkheadLayer<P>, L>>;

    /// Adds an [`AdaptiveConcurrencyLayer`](crate::bulkhead::AdaptiveConcurrencyLayer).
    #[cfg(feature = "bulkhead")]
    #[cfg_attr(docsrs, doc(cfg(feature = "bulkhead")))]
    fn adaptive_concurrency<C>(
        self,
        layer: crate::bulkhead::AdaptiveConcurrencyLayer<C>,
    ) -> ServiceBuilder<Stack<crate::bulkhead::AdaptiveConcurrencyLayer<C>, L>>;

    /// Adds an [`AdmissionLayer`](crate::bulkhead::AdmissionLayer):
    /// client-side throttling.
    #[cfg(feature = "bulkhead")]
    #[cfg_attr(docsrs, doc(cfg(feature = "bulkhead")))]
    fn admission<C>(
        self,
        layer: crate::bulkhead::AdmissionLayer<C>,
    ) -> ServiceBuilder<Stack<crate::bulkhead::AdmissionLayer<C>, L>>;

    /// Adds a [`ChaosLayer`](crate::chaos::ChaosLayer): fault injection
    /// driven by its controller.
    #[cfg(feature = "chaos")]
    #[cfg_attr(docsrs, doc(cfg(feature = "chaos")))]
    fn chaos<C>(
        self,
        layer: crate::chaos::ChaosLayer<C>,
    ) -> ServiceBuilder<Stack<crate::chaos::ChaosLayer<C>, L>>;

    /// Adds a [`BalancerLayer`](crate::loadbalance::BalancerLayer): the
    /// service below is a discovery stream, the service built a balancer
    /// over it.
    #[cfg(feature = "loadbalance")]
    #[cfg_attr(docsrs, doc(cfg(feature = "loadbalance")))]
    fn balance<N, Req, C, H>(
        self,
        layer: crate::loadbalance::BalancerLayer<N, Req, C, H>,
    ) -> ServiceBuilder<Stack<crate::loadbalance::BalancerLayer<N, Req, C, H>, L>>;
}

impl<L> sealed::Sealed for ServiceBuilder<L> {}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    #[cfg(feature = "circuit-breaker")]
    fn circuit_breaker<C>(
        self,
        layer: crate::circuit_breaker::CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<Stack<crate::circuit_breaker::CircuitBreakerLayer<C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "circuit-breaker")]
    fn keyed_circuit_breaker<F, K, C>(
        self,
        layer: crate::circuit_breaker::KeyedCircuitBreakerLayer<F, K, C>,
    ) -> ServiceBuilder<Stack<crate::circuit_breaker::KeyedCircuitBreakerLayer<F, K, C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "retry")]
    fn budgeted_retry<B, P>(
        self,
        layer: crate::retry::RetryLayer<B, P>,
    ) -> ServiceBuilder<Stack<crate::retry::RetryLayer<B, P>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "retry")]
    fn hedge<B, P>(
        self,
        layer: crate::retry::hedge::HedgeLayer<B, P>,
    ) -> ServiceBuilder<Stack<crate::retry::hedge::HedgeLayer<B, P>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "bulkhead")]
    fn bulkhead(
        self,
        layer: crate::bulkhead::BulkheadLayer,
    ) -> ServiceBuilder<Stack<crate::bulkhead::BulkheadLayer, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "bulkhead")]
    fn partitioned_bulkhead<P>(
        self,
        layer: crate::bulkhead::PartitionedBulkheadLayer<P>,
    ) -> ServiceBuilder<Stack<crate::bulkhead::PartitionedBulkheadLayer<P>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "bulkhead")]
    fn adaptive_concurrency<C>(
        self,
        layer: crate::bulkhead::AdaptiveConcurrencyLayer<C>,
    ) -> ServiceBuilder<Stack<crate::bulkhead::AdaptiveConcurrencyLayer<C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "bulkhead")]
    fn admission<C>(
        self,
        layer: crate::bulkhead::AdmissionLayer<C>,
    ) -> ServiceBuilder<Stack<crate::bulkhead::AdmissionLayer<C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "chaos")]
    fn chaos<C>(
        self,
        layer: crate::chaos::ChaosLayer<C>,
    ) -> ServiceBuilder<Stack<crate::chaos::ChaosLayer<C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "loadbalance")]
    fn balance<N, Req, C, H>(
        self,
        layer: crate::loadbalance::BalancerLayer<N, Req, C, H>,
    ) -> ServiceBuilder<Stack<crate::loadbalance::BalancerLayer<N, Req, C, H>, L>> {
        self.layer(layer)
    }
}

mod sealed {
    pub trait Sealed {}
}
