//! The recommended client stack: every watertight layer in the order the
//! anchors use, built from defaults in one call.
//!
//! ```text
//! request
//!   │ concurrency limit   bulkhead::AdaptiveConcurrency (windowed Vegas, fail-fast)
//!   │ admission           bulkhead::Admission (Google SRE client-side throttling)
//!   │ deadline + retry    retry::Retry (overall deadline, gRPC retry throttling, jittered backoff)
//!   │ balancer            loadbalance::Balancer (zone-aware, P2C over PeakEWMA, outlier detection)
//!   ├─ per endpoint:
//!   │ breaker             circuit_breaker::CircuitBreaker (Backpressure, slow calls, in a BreakerGroup)
//!   │ endpoint limit      bulkhead::Bulkhead (Backpressure, 10 in flight)
//!   │ per-try timeout     tower::timeout::Timeout
//!   │ chaos               chaos::Chaos (inert until an experiment starts)
//!   ▼ the endpoint's service (a hyper client, a tonic channel, …)
//! ```
//!
//! [`client`] builds it from a [`ClientConfig`] (every layer's own
//! configuration type, readable from a file with feature `serde`);
//! [`ClientBuilder`] adds the client's own cluster for zone-aware routing
//! and a shared chaos controller. The [`Client`] is a
//! `tower::Service<http::Request<B>>` whose [`Handles`] observe and control
//! each layer.
//!
//! # Why this order
//!
//! - **Concurrency limit, outermost.** It bounds what this client keeps in
//!   flight at its backends and refuses the excess at once
//!   ([`Full`](crate::bulkhead::error::Full)), so overload shows up as fast
//!   refusals instead of queues that make every request slow. Outside the
//!   retries, a request holds one permit whatever its attempts: a retry
//!   never turns into extra concurrency. This is where Envoy puts its
//!   cluster `max_requests` circuit breaker (in front of the router's
//!   retries) and where Netflix's concurrency-limits puts a client-side
//!   limiter.
//! - **Admission, inside the limit.** Client-side throttling (Google SRE
//!   "Handling Overload"; Envoy's `admission_control` filter, which also
//!   sits before the router) rejects locally the share of requests the
//!   backends refuse anyway. Inside the limit, its window counts what the
//!   backends did and never the limiter's own refusals; outside the retries,
//!   a request is counted once, with its final outcome.
//! - **Overall deadline and retry.** One [`Retry`](crate::retry::Retry)
//!   layer holds the deadline across attempts and backoffs (Envoy's route
//!   timeout, gRPC's deadline) and the retries themselves, each allowed by
//!   a budget shared by the whole client. Above the balancer, every attempt
//!   is a fresh pick, and the request's
//!   [`Attempted`](crate::core::Attempted) note steers it to an endpoint
//!   not tried yet (Envoy's `previous_hosts` retry predicate).
//! - **Balancer.** Envoy's zone-aware routing when the client's own cluster
//!   is known, power of two choices over PeakEWMA (Finagle, linkerd), and
//!   Envoy's outlier detection, which ejects endpoints that fail with a cap
//!   and a panic mode. An endpoint whose per-endpoint layers are not ready
//!   counts as unavailable for routing, as linkerd routes around endpoints
//!   whose failure accrual tripped. The balancer is shared by the client's
//!   clones behind a `tower::buffer::Buffer`.
//! - **Per endpoint: breaker, then limit, then per-try timeout, then
//!   chaos.** What takes an endpoint out of rotation sits where the trouble
//!   is one endpoint's. The breaker (in `Backpressure` mode, outermost so
//!   its refusals take no permit) catches an endpoint that has become slow
//!   without failing (a gray failure), which outlier detection, counting
//!   failures, does not see. The endpoint limit catches an endpoint that
//!   stopped answering: once it holds 10 requests it is skipped, long
//!   before the first of them times out. The per-try timeout sits inside
//!   both and inside the balancer's outlier detection, so an attempt that
//!   hangs counts as that endpoint's failure (Envoy reports a per-try
//!   timeout to outlier detection as a `504` of that host) and frees the
//!   request to be retried elsewhere. Fault injection is innermost, so an
//!   injected fault meets every protection above it exactly as a real
//!   failure of that endpoint would: a game day tests the stack, not a
//!   shortcut around it.
//!
//! # Who reacts to what
//!
//! - Failures of one endpoint: outlier detection (Envoy's consecutive-5xx
//!   and success-rate detectors), capped at 34% of the endpoints.
//! - Slowness of one endpoint: its breaker (half of its last 10 calls,
//!   once it has 5, slower than half the per-try timeout), the breakers of
//!   one client capped at 34% open together by a
//!   [`BreakerGroup`](crate::circuit_breaker::BreakerGroup).
//! - An endpoint that does not answer: its limit of requests in flight.
//! - Failures everywhere (a brownout): the retry budget, gRPC's retry
//!   throttling, which stops retrying while more than about one attempt in
//!   eleven fails; admission, once the backends refuse more than half.
//! - Load above capacity: the concurrency limit, from queueing latency and
//!   timeouts ([`LimitClassify`]); a `503` is a refusal, which admission
//!   acts on ([`RefusalClassify`]), not a sign of queueing.
//!
//! # Per-endpoint breakers under a balancer
//!
//! A breaker per endpoint judges its endpoint alone. When every endpoint
//! fails at once (a brownout, a slowdown of the whole cluster), every
//! breaker trips and no endpoint is ready: requests wait for a probe window
//! instead of reaching endpoints that would have served most of them (in
//! the scenario comparison, a brownout costs `tower-resilience`'s
//! per-endpoint breakers half of the requests, which wait until they give
//! up). Outlier detection has a cap and a panic mode for this; the stack
//! gives its breakers the same cap with a
//! [`BreakerGroup`](crate::circuit_breaker::BreakerGroup), and leaves
//! failures to outlier detection, so a brownout opens no breaker at all.
//!
//! # Defaults that differ
//!
//! Each layer's own defaults are its anchor's (see each crate). The stack
//! changes these, for the reason given; the scenario comparison
//! (BENCHMARKS.md) measures the result:
//!
//! - outlier detection's `max_ejection_percent` is 34 (Envoy: 10): a zone of
//!   three is a third of the endpoints, and a zone outage is the failure to
//!   plan for; at 10% a failed zone keeps two of its three endpoints in
//!   rotation and its clients keep retrying into them;
//! - the concurrency limit starts at 50 (Netflix: 20) and grows from there
//!   only while half of it is in use: it must hold a zone's worth of hung
//!   requests (three endpoint limits of 10) on top of the usual ones, or a
//!   zone that stops answering makes it refuse requests before the endpoint
//!   limits have routed around the zone;
//! - the limits count timeouts and errors as drops but not `503`s
//!   ([`LimitClassify`]): a brownout whose errors have nothing to do with
//!   load would otherwise drive the limit to its floor;
//! - the retry budget is gRPC's retry throttling (100 tokens, 0.1 earned
//!   per success; retries only above 50) instead of Finagle's ratio budget:
//!   a failure confined to some endpoints is retried in full, while in a
//!   brownout, where a retry fails as often as the first attempt, retries
//!   stop instead of adding a fifth more load; 100 tokens let a zone's
//!   worth of timeouts be retried at once;
//! - the per-endpoint breaker trips on slow calls only, over its last 10
//!   calls: an endpoint avoided by the balancer (PeakEWMA) gets few calls,
//!   and the resilience4j default of 100 would take minutes;
//! - the retry layer has a 10 s overall deadline (the crate: none), so a
//!   request waiting for a ready endpoint ends;
//! - the per-try timeout is 1 s (set it to your service's: a little above
//!   its p99.9).
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use http::{Request, Response};
//! use tower::{Service, ServiceExt};
//! use watertight::core::{Endpoint, Locality};
//! use watertight::discovery::Static;
//! use watertight::stack::{self, ClientConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), watertight::core::BoxError> {
//! let endpoints: Vec<Endpoint> = (1..=3)
//!     .map(|i| Endpoint::new(format!("10.0.0.{i}:80").parse().unwrap()).with_locality(Locality::zone("a")))
//!     .collect();
//! let config = ClientConfig::default()
//!     .name("inventory")
//!     .per_try_timeout(Duration::from_millis(250));
//! // Each endpoint's service: here an in-process one; a hyper-util client
//! // pointed at `endpoint.addr` in a real service.
//! let mut client = stack::client(config, Static::new(endpoints), |_: &Endpoint| {
//!     tower::service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new("ok")) })
//! })?;
//!
//! let res = client.ready().await?.call(Request::new(())).await?;
//! assert_eq!(*res.body(), "ok");
//! assert_eq!(client.handles().retry.snapshot().requests, 1);
//! # Ok(()) }
//! ```

mod classify;
mod client;
mod config;

pub use classify::{LimitClassify, RefusalClassify};
pub use client::{client, Client, ClientBuilder, Handles};
pub use config::{ClientConfig, ConfigError};
