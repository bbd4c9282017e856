//! A circuit breaker for `tower` services: stop calling a dependency that is
//! failing, give it time to recover, and find out with a few probe calls
//! whether it has.
//!
//! [`CircuitBreakerLayer`] wraps any [`tower::Service`](tower_service::Service)
//! (a hyper-util or tonic client, a backend of a load balancer) in a
//! [`CircuitBreaker`]. It records each call's outcome, judged by a
//! [`Classify`] (every `Err` is a failure by default; [`ServerErrorsAsFailures`]
//! judges HTTP responses by status), and opens when a trip policy fires:
//!
//! - **failure rate** over a count window (the last N calls) or a time window
//!   (the calls of the last T), once the window holds `minimum_calls`, when
//!   `failures / calls >= failure_rate_threshold`;
//! - **slow-call rate**: the same over calls slower than
//!   `slow_call_duration`;
//! - **consecutive failures**: `consecutive_failures` failures in a row.
//!
//! Policies are OR-ed; the transition event says which fired.
//!
//! # States
//!
//! - `Closed`: calls pass and are recorded. A trip policy firing moves it to
//!   `Open`.
//! - `Open`: calls are rejected with [`error::Open`], which carries the time
//!   until the next probe. When the open duration has passed, the next call
//!   (or, in [`Mode::Backpressure`], a timer) moves it to `HalfOpen`. The
//!   open duration follows `open_backoff`: it grows over repeated trips
//!   (5 s to 300 s with equal jitter by default) and starts over on close.
//! - `HalfOpen`: at most `permitted_probes` calls go at once, as probes.
//!   `success_threshold` probe successes move it to `Closed` (with an empty
//!   window); any probe failure, or with the slow-call policy on any probe
//!   slower than `slow_call_duration`, moves it back to `Open` for the next,
//!   longer, open duration. If every permit stays taken and no probe comes back for
//!   `max_half_open_duration`, it reopens too. A probe whose response future
//!   is dropped (cancelled) gives its permit back and counts nothing.
//! - By hand, through the [`CircuitBreakerHandle`]: `ForcedOpen` rejects
//!   everything, `Disabled` passes everything and records nothing,
//!   `MetricsOnly` records everything and never trips; `force_close` and
//!   `reset` return to `Closed`.
//!
//! Every transition bumps a generation. A call's result is recorded only in
//! the generation it was admitted in, so a slow call admitted before the
//! breaker opened cannot, by failing late, reopen a breaker that has since
//! closed.
//!
//! # Modes
//!
//! In [`Mode::FailFast`] (the default) a rejecting breaker's `poll_ready` is
//! `Ready` and `call` fails at once: right for a caller with a fallback.
//! In [`Mode::Backpressure`] `poll_ready` is `Pending` while the breaker
//! rejects, and the task is woken exactly when the next probe may go.
//!
//! **Under a load balancer, use `Backpressure` on per-endpoint breakers.**
//! A balancer such as tower's `p2c` picks among endpoints whose `poll_ready`
//! is `Ready`: a `Pending` breaker takes its endpoint out of the rotation
//! until the probe window opens, the way linkerd ejects failing endpoints,
//! instead of failing the requests that land on it. A `FailFast` breaker
//! there would look ready and fail every request the balancer sends it.
//! Keep `FailFast` for a breaker in front of the balancer, where the error
//! is the answer.
//!
//! **And put the per-endpoint breakers in a [`BreakerGroup`].** Each
//! breaker judges its own endpoint alone: when every endpoint fails at
//! once (a brownout, a slowdown of the whole cluster), every breaker trips
//! and no endpoint is left to serve the requests that would have
//! succeeded. A group caps the share of its members open at once, as
//! Envoy's `max_ejection_percent` caps outlier ejections; see [`group`].
//!
//! # Observability
//!
//! - `tracing`: an `INFO` event per transition, a `DEBUG` one per trip a
//!   group refused, target `watertight_circuit_breaker`.
//! - `metrics`, label `name` (and `key` for keyed breakers):
//!   `watertight_circuit_breaker_state` (gauge, set at construction; see
//!   [`State::code`]), `watertight_circuit_breaker_calls_total` (label
//!   `outcome`: `success`, `failure`, `slow_success`, `slow_failure`,
//!   `ignored`), `watertight_circuit_breaker_rejected_total`,
//!   `watertight_circuit_breaker_transitions_total` (labels `from`, `to`),
//!   `watertight_circuit_breaker_trips_refused_total` (trips a
//!   [`BreakerGroup`] refused);
//!   keyed breakers add `watertight_circuit_breaker_keys` (gauge),
//!   `watertight_circuit_breaker_keys_evicted_total` and
//!   `watertight_circuit_breaker_keys_refused_total`.
//! - typed [`Event`]s through [`Builder::on_event`].
//!
//! # Keyed breakers
//!
//! [`Builder::keyed`] makes a [`KeyedCircuitBreaker`]: one breaker per key
//! (host, route, tenant) extracted from each request, with idle keys
//! evicted and the number of keys bounded ([`error::TooManyKeys`]).
//!
//! # Feature flags
//!
//! - `http` (default): re-exports watertight-core's
//!   [`ServerErrorsAsFailures`], the classifier of `http::Response`s.
//! - `serde`: `Deserialize`/`Serialize` for [`Config`], durations in
//!   humantime (`"30s"`), validated on the way in with errors naming the
//!   field.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//! use watertight_circuit_breaker::{error::Open, CircuitBreakerLayer, State};
//! use watertight_core::{find_cause, BoxError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let breaker = CircuitBreakerLayer::builder()
//!     .name("inventory")
//!     .consecutive_failures(3)
//!     .open_duration(Duration::from_secs(10))
//!     .build()?;
//! // A backend that is down.
//! let backend = service_fn(|_req: &'static str| async { Err::<String, _>("connection refused") });
//! let mut client = ServiceBuilder::new().layer(breaker).service(backend);
//!
//! for _ in 0..3 {
//!     let err = client.ready().await?.call("GET /stock").await.unwrap_err();
//!     assert_eq!(err.to_string(), "connection refused");
//! }
//! assert_eq!(client.handle().state(), State::Open);
//!
//! // The fourth call never reaches the backend.
//! let err = client.ready().await?.call("GET /stock").await.unwrap_err();
//! let open = find_cause::<Open>(&*err).expect("rejected by the breaker");
//! assert!(open.retry_after() <= Duration::from_secs(10));
//! # Ok(())
//! # }
//! ```
//!
//! # Sources
//!
//! The failure-rate and slow-call-rate policies, `minimum_calls`, the `>=`
//! comparison, the count and time windows, the half-open probe limit and the
//! manual states follow resilience4j's `CircuitBreaker`. Consecutive
//! failures and open durations that grow over repeated trips follow
//! Finagle's failure accrual (`FailureAccrualFactory`) and linkerd's
//! consecutive-failure accrual with backoff. Probe permits released on drop
//! and generation-checked results address two known resilience4j pitfalls:
//! half-open permits held by calls that were cancelled, and results of calls
//! started in an earlier state counted in the current one.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod breaker;
mod config;
pub mod error;
pub mod event;
pub mod future;
pub mod group;
mod handle;
pub mod keyed;
mod layer;
#[cfg(watertight_loom)]
#[doc(hidden)]
pub mod probe;
#[cfg(not(watertight_loom))]
mod probe;
mod service;
mod state;
mod sync;

pub use config::{Builder, Config, Mode, Window};
pub use event::Event;
pub use group::BreakerGroup;
pub use handle::{CircuitBreakerHandle, Snapshot};
pub use keyed::{KeyedBuilder, KeyedCircuitBreaker, KeyedCircuitBreakerLayer, KeyedHandle};
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreaker;
pub use state::State;

pub use watertight_core::classify::classify_fn;
pub use watertight_core::{
    Backoff, BoxError, Classify, ClassifyFn, ErrorsAsFailures, ResponseClass,
};

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use watertight_core::classify::ServerErrorsAsFailures;
