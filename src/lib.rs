//! watertight: composable `tower` layers for failure-first Rust services:
//! circuit breaking, bulkheads, adaptive retries with budgets, zone-aware
//! load balancing with outlier detection, service discovery and fault
//! injection.
//!
//! This facade re-exports the member crates behind features of the same
//! names, adds [`ServiceBuilderExt`] (one `ServiceBuilder` method per
//! layer) and, with feature `stack`, the [recommended client stack](stack):
//! every layer in the order Envoy, linkerd and Finagle use, built from
//! defaults in one call.
//!
//! # Feature flags
//!
//! - `core` (default): [`core`], the shared vocabulary.
//! - `circuit-breaker`: [`circuit_breaker`].
//! - `retry`: [`retry`].
//! - `bulkhead`: [`bulkhead`].
//! - `loadbalance`: [`loadbalance`].
//! - `discovery`: [`discovery`], endpoint sources (static, file) and their guards; `dns` and `etcd` add its DNS and etcd sources (`etcd` needs `protoc` to build).
//! - `chaos`: [`chaos`].
//! - `http`: `http` support in every enabled crate (`ServerErrorsAsFailures`,
//!   the retry's HTTP policy, header hints, HTTP fault injection).
//! - `serde`: configuration files for every enabled crate and for
//!   [`stack::ClientConfig`].
//! - `stack`: the [`stack`] module; implies `http`, `circuit-breaker`,
//!   `retry`, `bulkhead`, `loadbalance` and `chaos`.
//!
//! # Example
//!
//! The recommended stack over three endpoints (in-process services here;
//! hyper-util clients pointed at each endpoint's address in a real
//! service):
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower::{Service, ServiceExt};
//! use watertight::core::Endpoint;
//! use watertight::discovery::Static;
//! use watertight::stack::{self, ClientConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), watertight::core::BoxError> {
//! let endpoints = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map(|a| Endpoint::new(a.parse().unwrap()));
//! let mut client = stack::client(ClientConfig::default(), Static::new(endpoints), |_: &Endpoint| {
//!     tower::service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) })
//! })?;
//! let res = client.ready().await?.call(Request::new(())).await?;
//! assert_eq!(res.status(), 200);
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "core")]
#[doc(inline)]
pub use watertight_core as core;

#[cfg(feature = "circuit-breaker")]
#[doc(inline)]
pub use watertight_circuit_breaker as circuit_breaker;

#[cfg(feature = "retry")]
#[doc(inline)]
pub use watertight_retry as retry;

#[cfg(feature = "bulkhead")]
#[doc(inline)]
pub use watertight_bulkhead as bulkhead;

#[cfg(feature = "loadbalance")]
#[doc(inline)]
pub use watertight_loadbalance as loadbalance;

#[cfg(feature = "discovery")]
#[doc(inline)]
pub use watertight_discovery as discovery;

#[cfg(feature = "chaos")]
#[doc(inline)]
pub use watertight_chaos as chaos;

mod ext;
pub use ext::ServiceBuilderExt;

#[cfg(feature = "stack")]
#[cfg_attr(docsrs, doc(cfg(feature = "stack")))]
pub mod stack;
