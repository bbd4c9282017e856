//! Retries for tower services that cannot turn a brownout into a retry
//! storm: budgets, backoff, server hints, deadlines, hedging and replayable
//! bodies.
//!
//! A retry layer is the easiest way to make a failing backend fail harder.
//! This crate bounds every retry three ways:
//!
//! - per request: [`max_attempts`](Builder::max_attempts) (the first
//!   included), a jittered [`Backoff`](watertight_core::Backoff) between
//!   attempts, the server's own delay (`Retry-After`,
//!   `grpc-retry-pushback-ms`) honoured up to `max_server_delay`, and an
//!   overall [`deadline`] with a per-attempt timeout;
//! - per client: a [`budget`] every retry withdraws from, so retries
//!   stay a bounded share of the traffic (Finagle's ratio budget by
//!   default: 20% of requests plus 10 per second);
//! - across layers: a result the layer gave up on is [marked](mark), and no
//!   watertight retry layer retries a marked result, so stacked layers do
//!   not multiply attempts.
//!
//! Only requests the [`Policy`] calls idempotent are retried (by default
//! HTTP GET, HEAD, OPTIONS, PUT, DELETE, or a request carrying
//! [`RetrySafe`](policy::RetrySafe)), and only failures its classifier calls
//! retryable. Every request carries an [`Attempted`](watertight_core::Attempted)
//! note shared by its attempts, so a balancer underneath sends retries to
//! endpoints not yet tried (Envoy's `previous_hosts` retry predicate).
//!
//! The [`hedge`] module sends backup copies of slow idempotent requests
//! ("The Tail at Scale"); the [`replay`] module (feature `http`) makes
//! streaming HTTP bodies replayable.
//!
//! Where the defaults come from: attempts and backoff (3 attempts, full
//! jitter from 25 ms to 250 ms) are Envoy's retry policy; the ratio budget
//! is Finagle's `RetryBudget`; the concurrency budget is Envoy's cluster
//! `retry_budget`; the token buckets are the AWS SDKs' standard retry mode
//! and gRPC's retry throttling (proposal A6), which also defines
//! `grpc-retry-pushback-ms` and `grpc-timeout`. The [`budget`] and [`hedge`]
//! modules give each algorithm.
//!
//! # Feature flags
//!
//! - `http`: [`replay::ReplayBody`]; [`StandardPolicy::http`], the preset
//!   for `http` messages (5xx/429/408 classification, idempotent methods,
//!   `Retry-After` and pushback headers, replayed bodies); the deadline
//!   header layers of [`deadline`].
//! - `serde`: `Deserialize`/`Serialize` for [`Config`],
//!   [`HedgeConfig`](hedge::HedgeConfig) and
//!   [`BudgetConfig`](budget::BudgetConfig), durations in humantime
//!   (`"250ms"`).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Layer, Service, ServiceExt};
//! use watertight_core::{BoxError, Extensions};
//! use watertight_retry::policy::{AllRequests, NoHints};
//! use watertight_retry::RetryLayer;
//!
//! #[derive(Clone)]
//! struct Get(&'static str);
//! impl Extensions for Get {}
//!
//! struct Page(String);
//! impl Extensions for Page {}
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let layer = RetryLayer::builder()
//!     .max_attempts(3)
//!     .per_try_timeout(Duration::from_millis(500))
//!     .idempotency(AllRequests) // every `Get` may be sent twice
//!     .hints(NoHints) // a `Page` carries no server hints
//!     .build()
//!     .unwrap();
//! let handle = layer.handle();
//!
//! // A backend whose first answer is an error.
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let backend = service_fn(move |req: Get| {
//!     let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!     async move {
//!         if n == 0 {
//!             Err::<Page, BoxError>("connection reset".into())
//!         } else {
//!             Ok(Page(format!("page {}", req.0)))
//!         }
//!     }
//! });
//!
//! let mut client = layer.layer(backend);
//! let page = client.ready().await.unwrap().call(Get("/")).await.unwrap();
//! assert_eq!(page.0, "page /");
//! assert_eq!(handle.snapshot().retries, 1);
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

#[macro_use]
mod macros;

pub mod budget;
mod config;
pub mod deadline;
pub mod error;
pub mod event;
pub mod future;
mod handle;
pub mod hedge;
mod layer;
pub mod mark;
mod parts;
pub mod policy;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod replay;
mod service;
mod shared;

pub use budget::{Budget, RatioBudget};
pub use config::{Builder, Config};
pub use handle::{RetryHandle, Snapshot};
pub use layer::RetryLayer;
pub use mark::{is_exhausted, Reason, RetriesExhausted};
pub use policy::{Policy, StandardPolicy};
pub use service::Retry;
