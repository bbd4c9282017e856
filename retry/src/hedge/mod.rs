//! Hedged requests: a backup copy of a slow request, the first success
//! wins.
//!
//! Dean and Barroso's "The Tail at Scale" (CACM, 2013): defer a secondary
//! request until the first has been outstanding longer than the 95th
//! percentile of recent latencies, and take whichever answers first. Only
//! about 5% of requests get a backup, and the tail latency falls
//! dramatically, because a slow answer is usually slow for reasons (a GC
//! pause, a busy queue, a bad host) that a second copy avoids. gRPC's
//! `hedgingPolicy` (proposal A6) and Envoy's hedge policy follow the same
//! idea.
//!
//! The [`Hedge`] layer:
//!
//! - hedges only requests its [`Policy`](crate::Policy) calls idempotent
//!   (by default HTTP GET, HEAD, OPTIONS, PUT, DELETE, or marked
//!   [`RetrySafe`](crate::policy::RetrySafe)), sent to the same inner
//!   service (a balancer, which the shared
//!   [`Attempted`](watertight_core::Attempted) steers to another endpoint);
//! - sends a hedge after the `1 - max_extra_load` percentile (default 95th)
//!   of a rotating [hdrhistogram] of successful attempts' latencies (the
//!   last full `period`, or the period so far until one is complete), with a
//!   1 ms floor, and none while fewer than `min_samples` latencies are in or
//!   when the percentile is at the histogram's top; or after a fixed delay;
//! - sends up to `max_hedged_attempts` hedges, one per delay;
//! - takes every hedge from a [budget](crate::budget) (by default a ratio
//!   budget of `max_extra_load`), so a sudden latency shift cannot double
//!   the load;
//! - returns the first success (or non-retryable answer) and drops, so
//!   cancels, the other attempts; when every attempt fails, returns the
//!   last failure (retrying is the [`Retry`](crate::Retry) layer's job: put
//!   it outside).
//!
//! tower's `hedge` middleware does the same with one hedge, no budget, and
//! a histogram that must fill a whole period before the first hedge.
//!
//! [hdrhistogram]: https://hdrhistogram.github.io/HdrHistogram/
//!
//! ```
//! use std::time::Duration;
//! use watertight_retry::hedge::{HedgeDelay, HedgeLayer};
//!
//! let layer = HedgeLayer::builder()
//!     .delay(HedgeDelay::percentile(0.05))
//!     .max_hedged_attempts(1)
//!     .build()
//!     .unwrap();
//! assert_eq!(layer.handle().snapshot().hedges_sent, 0);
//! ```

mod config;
pub mod future;
mod latency;
mod layer;
mod service;

pub use config::{HedgeBuilder, HedgeConfig, HedgeDelay};
pub use layer::{HedgeHandle, HedgeLayer, HedgeSnapshot};
pub use service::Hedge;
