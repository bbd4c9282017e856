//! Bulkheads for `tower` services: bound how much of a service's capacity
//! any one dependency, tenant or burst can take, so that overload in one
//! compartment does not sink the rest.
//!
//! - [`Bulkhead`] ([`BulkheadLayer`]): at most `max_concurrent` calls in
//!   flight (default 100), an optional bounded wait queue (`max_queue`,
//!   `max_wait`) served FIFO or LIFO, fail-fast or backpressure, resizable
//!   at run time through its [`BulkheadHandle`].
//! - [`PartitionedBulkhead`] ([`PartitionedBulkheadLayer`]): a total limit
//!   divided among partitions keyed by the request, each guaranteed its
//!   share and free to borrow idle capacity (Netflix's partitioned limiter);
//!   requests carrying a [`Criticality`] are shed least critical first.
//! - [`AdaptiveConcurrency`] ([`AdaptiveConcurrencyLayer`]): a limit that
//!   follows the service's latency and drops, with pluggable
//!   [`limit`] algorithms: AIMD, Vegas (the default) and Gradient2 (Netflix
//!   concurrency-limits) and Envoy's gradient controller, windowed samples,
//!   min and max limits, drops judged by a [`Classify`](watertight_core::Classify).
//! - [`Admission`] ([`AdmissionLayer`]): client-side throttling (Google SRE),
//!   rejecting locally as the backend rejects more.
//!
//! A request turned away fails with [`error::Full`] or [`error::Throttled`]
//! inside a [`BoxError`](watertight_core::BoxError), without reaching the
//! inner service; both carry a `retry_after` hint, and with feature `http`
//! `http::ErrorResponse` makes a server's `503` with `Retry-After` out of
//! them.
//!
//! # Permits
//!
//! A permit is reserved in `poll_ready` ([`Mode::Backpressure`], or when a
//! queue is configured) or taken in `call` ([`Mode::FailFast`] without a
//! queue), moves into the response future and is given back when the call
//! completes or its future is dropped: a cancelled call never keeps
//! capacity. The permit logic is lock-free while nobody waits and is
//! model-checked with loom. Lowering a limit revokes nothing: calls in
//! flight finish and new ones wait until fewer than the new limit are in
//! flight.
//!
//! # Modes and queue order
//!
//! In [`Mode::FailFast`] (default) a call that finds no permit fails at
//! once, or after waiting up to `max_wait` among at most `max_queue`
//! queued requests. In [`Mode::Backpressure`] `poll_ready` is `Pending`
//! until a permit is handed over, and the task is woken exactly then: what
//! a per-endpoint limit under a load balancer needs, so the balancer skips
//! the busy endpoint. [`Order::Lifo`] serves the newest waiter first, which
//! keeps some requests within their deadlines under overload (Facebook's
//! adaptive LIFO).
//!
//! # In a client stack
//!
//! An [`AdaptiveConcurrency`] in front of a client's retries and balancer
//! (outermost, so a retry never turns into extra concurrency) keeps the
//! client from queueing more at its backends than they can serve, and sheds
//! the excess at once. Classify HTTP responses with
//! `ServerErrorsAsFailures` (watertight-core, feature `http`) so that `503`s
//! and timeouts count as drops. An [`Admission`] throttle goes inside it.
//!
//! # Observability
//!
//! - `tracing`, target `watertight_bulkhead`: `INFO` on a resize, `DEBUG`
//!   on an adaptive limit change, `TRACE` on a rejection.
//! - `metrics`, label `name`: for [`Bulkhead`] `watertight_bulkhead_*`, for
//!   [`AdaptiveConcurrency`] `watertight_adaptive_concurrency_*`, each with
//!   gauges `_limit`, `_in_flight`, `_queued` (set at construction) and
//!   counters `_admitted_total`, `_rejected_total` (label `reason`:
//!   `at_limit`, `queue_full`, `wait_elapsed`);
//!   `watertight_partitioned_bulkhead_{limit,in_flight,admitted_total,rejected_total}`
//!   (label `partition`, and `reason` `at_limit` or `shed`);
//!   `watertight_admission_requests_total` (label `outcome`: `accepted`,
//!   `refused`, `throttled`) and `watertight_admission_rejection_probability`.
//! - typed [`event::Event`]s through each builder's `on_event`.
//!
//! # Feature flags
//!
//! - `serde`: `Deserialize`/`Serialize` for [`BulkheadConfig`],
//!   [`AdaptiveConfig`], [`PartitionedConfig`] and [`AdmissionConfig`],
//!   durations in humantime (`"250ms"`), validated on the way in with errors
//!   naming the field.
//! - `http`: `http::ErrorResponse`, the `503` + `Retry-After` mapping of
//!   rejections; [`Criticality`] read from `http::Request` extensions.
//! - `axum`: `IntoResponse` for `http::ErrorResponse`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//! use watertight_bulkhead::{error::Full, BulkheadLayer};
//! use watertight_core::{is_caused_by, BoxError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let bulkhead = BulkheadLayer::builder()
//!     .name("inventory-db")
//!     .max_concurrent(2)
//!     .build()?;
//! let db = service_fn(|query: &'static str| async move {
//!     tokio::time::sleep(Duration::from_millis(10)).await;
//!     Ok::<_, BoxError>(query.len())
//! });
//! let mut client = ServiceBuilder::new().layer(bulkhead).service(db);
//! let handle = client.handle();
//!
//! // Two calls in flight take both permits; the third is turned away.
//! let a = client.ready().await?.call("SELECT 1");
//! let b = client.ready().await?.call("SELECT 2");
//! let err = client.ready().await?.call("SELECT 3").await.unwrap_err();
//! assert!(is_caused_by::<Full>(&*err));
//! assert_eq!(handle.in_flight(), 2);
//!
//! // Completed (or dropped) calls give their permits back.
//! assert_eq!(a.await?, 8);
//! drop(b);
//! assert_eq!(handle.in_flight(), 0);
//!
//! // Resized at run time.
//! handle.resize(10)?;
//! assert_eq!(handle.limit(), 10);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

/// `Deserialize`, validated on the way in, and `Serialize` for a
/// configuration whose serde derives are `remote = "Self"` (feature
/// `serde`).
macro_rules! validated_serde {
    ($config:ty) => {
        #[cfg(feature = "serde")]
        impl<'de> serde::Deserialize<'de> for $config {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let c = <$config>::deserialize(d)?;
                c.validate().map_err(serde::de::Error::custom)?;
                Ok(c)
            }
        }

        #[cfg(feature = "serde")]
        impl serde::Serialize for $config {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                <$config>::serialize(self, s)
            }
        }
    };
}

mod adaptive;
pub mod admission;
mod config;
mod criticality;
pub mod error;
pub mod event;
pub mod future;
#[cfg(watertight_loom)]
#[doc(hidden)]
pub mod gate;
#[cfg(not(watertight_loom))]
mod gate;
mod handle;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod layer;
pub mod limit;
mod limiter;
pub mod partition;
#[cfg(watertight_loom)]
#[doc(hidden)]
pub mod semaphore;
#[cfg(not(watertight_loom))]
mod semaphore;
mod service;
mod sync;

pub use adaptive::{AdaptiveBuilder, AdaptiveConfig, AlgorithmConfig};
pub use admission::{AdmissionBuilder, AdmissionConfig, AdmissionHandle};
pub use config::{BulkheadBuilder, BulkheadConfig, Mode, Order};
pub use criticality::{Criticality, UnknownCriticality};
pub use handle::{AdaptiveHandle, BulkheadHandle, Snapshot};
pub use layer::{
    AdaptiveConcurrencyLayer, AdmissionLayer, BulkheadLayer, PartitionedBulkheadLayer,
};
pub use partition::{
    Partition, PartitionSnapshot, PartitionedBuilder, PartitionedConfig, PartitionedHandle,
    Partitioner, Unpartitioned,
};
pub use service::{AdaptiveConcurrency, Admission, Bulkhead, PartitionedBulkhead};
