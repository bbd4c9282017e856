//! Fault injection for tower services, with the safety rails a game day
//! needs.
//!
//! A [`ChaosController`] runs [`Experiment`]s; the [`ChaosLayer`] (any
//! service) and [`HttpChaosLayer`] (`http` services, feature `http`) built
//! from it inject their faults into the requests they target:
//!
//! - [faults](fault): latency (fixed, uniform, log-normal), aborts (a typed
//!   [`error::Injected`], an HTTP status, a gRPC status), hangs,
//!   unavailability (`poll_ready` pending), and for HTTP bodies throttling
//!   and truncation, each on a percentage of requests down to one in a
//!   million;
//! - [targets](target): method, path prefix, headers, and the locality and
//!   labels of the endpoint a load balancer picked
//!   ([`Selected`](watertight_core::Selected));
//! - safety rails: every experiment has a required time to live (capped,
//!   one hour by default), an optional [steady-state guard](AbortWhen)
//!   that aborts it by itself, a cap on concurrently active faults,
//!   [`halt_all`](ChaosController::halt_all), and an [audit] record
//!   for every transition;
//! - [header-triggered faults](headers) in Envoy's `x-envoy-fault-*` style,
//!   off unless enabled;
//! - control: an admin HTTP API (feature `admin`), fleet-wide experiments
//!   through etcd (feature `etcd`), and the `watertight-chaos` command-line
//!   tool (feature `cli`).
//!
//! With no experiment running and header faults off, a chaos layer costs
//! one relaxed atomic load in `poll_ready` and one in `call`.
//!
//! The design follows Envoy's fault injection filter (delays before the
//! upstream call, aborts in its place, `max_active_faults`, fault headers),
//! Netflix's Chaos Monkey and ChAP (opt-in, time-boxed, automatically
//! stopped experiments on a slice of traffic), the Principles of Chaos
//! Engineering (a steady-state hypothesis, a minimal blast radius), and
//! Toxiproxy's toxics for the body faults.
//!
//! # Feature flags
//!
//! - `http`: [`HttpChaos`], [`ChaosBody`], and [`Inspect`] for
//!   `http::Request`.
//! - `toml`: [`Experiment::from_toml`].
//! - `admin`: the [admin HTTP API](admin) (axum). Implies `http`.
//! - `etcd`: [fleet mode](fleet) through etcd-client and the etcd watch of
//!   `watertight-discovery` (needs `protoc` to build).
//! - `cli`: the `watertight-chaos` binary and its library entry,
//!   [`cli`]. Implies `http` and `toml`; add `etcd` for `--etcd`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{Service, ServiceExt};
//! use watertight_chaos::error::Injected;
//! use watertight_chaos::{ChaosController, Experiment, Fault, Abort, Inspect};
//! use watertight_core::ext::Extensions;
//!
//! struct Query(&'static str);
//! impl Extensions for Query {}
//! impl Inspect for Query {}
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), watertight_core::BoxError> {
//! let chaos = ChaosController::builder().seed(7).build()?;
//! let mut svc = tower::ServiceBuilder::new()
//!     .layer(chaos.layer())
//!     .service_fn(|q: Query| async move { Ok::<_, std::convert::Infallible>(q.0.len()) });
//!
//! chaos.start(
//!     Experiment::builder("always-fail")
//!         .duration(Duration::from_secs(60))
//!         .fault(Fault::Abort(Abort::Error), 100.0)
//!         .build()?,
//! )?;
//! let err = svc.ready().await?.call(Query("hello")).await.unwrap_err();
//! assert!(watertight_core::is_caused_by::<Injected>(&*err));
//!
//! chaos.halt_all();
//! assert_eq!(svc.ready().await?.call(Query("hello")).await?, 5);
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
pub mod admin;
pub mod audit;
#[cfg(feature = "http")]
mod body;
#[cfg(feature = "cli")]
#[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
pub mod cli;
mod controller;
pub mod error;
pub mod experiment;
pub mod fault;
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub mod fleet;
pub mod future;
mod guard;
pub mod headers;
mod layer;
mod service;
mod state;
pub mod target;

pub use audit::{Action, AuditRecord, AuditSink, Origin};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use body::ChaosBody;
pub use controller::{ChaosController, ControllerBuilder, ExperimentStatus};
pub use experiment::{AbortWhen, Experiment, ExperimentBuilder};
pub use fault::{Abort, Fault, FaultSpec, Latency, Percent};
pub use headers::HeaderFaults;
pub use layer::ChaosLayer;
#[cfg(feature = "http")]
pub use layer::HttpChaosLayer;
pub use service::Chaos;
#[cfg(feature = "http")]
pub use service::HttpChaos;
pub use target::{Inspect, Target};
