//! Client-side load balancing for tower services: power of two choices over
//! PeakEWMA, weights, priorities with spill-over and panic, Envoy's
//! zone-aware routing, label subsets for canaries, consistent hashing, slow
//! start, and Envoy-grade outlier detection.
//!
//! A [`Balancer`] is a [`tower::Service`](tower_service::Service) over a
//! stream of endpoint [`Change`](watertight_core::Change)s — any
//! `watertight-discovery` source — and a function that builds each
//! endpoint's service, where per-endpoint layers go: a circuit breaker in
//! `Backpressure` mode (an open breaker makes its endpoint not ready, and
//! the balancer routes around it), a per-try timeout, fault injection.
//!
//! # The pick pipeline
//!
//! Everything below is recomputed when membership, health or readiness
//! changes, never per request; a P2C pick draws a few random numbers
//! against the precomputed tables and compares two endpoints, in O(1)
//! whatever the number of endpoints (weighted EDF and ring-hash picks are
//! O(log n), Maglev's O(1)).
//!
//! 1. **Subset** ([`Subsets`]): endpoints labelled `version=v2` can get a
//!    fixed share (5% for a canary), the rest go to the others; a request
//!    can name its subset ([`Balancer::with_subset_override`], e.g. from a
//!    header). Each subset is then balanced on its own, as in Envoy's subset
//!    load balancer (subsets come first so that a canary gets its share
//!    whatever the zones).
//! 2. **Priority** (Envoy "Priority levels"): a level's health is
//!    `min(100, 1.4 · healthy%)`; load spills to the next level as health
//!    drops; degraded endpoints are a second tier.
//! 3. **Panic** (Envoy "Panic threshold", default 50%): a level whose
//!    available endpoints fall below the threshold is balanced over all of
//!    its ready endpoints, ejected and unhealthy ones included (or its
//!    requests fail, with [`Config::fail_traffic_on_panic`]).
//! 4. **Locality** ([`LocalityPolicy`]): Envoy's zone-aware routing (when a
//!    view of the client's own cluster is given), Envoy's locality-weighted
//!    balancing, prefer-local, or Netflix Ribbon's zone avoidance.
//! 5. **Endpoint** ([`Pick`]): power of two choices without replacement
//!    (Mitzenmacher, "The Power of Two Choices in Randomized Load
//!    Balancing", 2001) over PeakEWMA (Finagle and linkerd: the cost is
//!    `rtt · (pending + 1)` with a peak-sensitive moving average, and here a
//!    failure or a server's retry hint counts as a long round trip) or
//!    requests in flight; with unequal weights earliest deadline first over
//!    `weight / (active + 1)^bias` (Envoy's least-request balancer: weighted
//!    P2C misweights, tower#696); round robin; ring hash and Maglev with a
//!    request key ([`Balancer::with_hash_key`]); slow start for new
//!    endpoints ([`SlowStart`], Envoy's formula).
//!
//! Availability in steps 2–4 counts what can serve: an endpoint is
//! available when discovery reports it healthy (or degraded), outlier
//! detection has not ejected it, and its service is ready. So an endpoint
//! whose circuit breaker opened in `Backpressure` mode stops counting, and
//! when a whole zone's breakers open, zone-aware routing sends that zone's
//! clients elsewhere until the breakers probe again.
//!
//! A request carrying [`Attempted`](watertight_core::ext::Attempted) (put
//! there by a retry or hedging layer) goes to an endpoint not tried yet
//! within the same locality decision, as Envoy's `previous_hosts` retry
//! predicate; the balancer records its pick there and names it in a
//! [`Selected`](watertight_core::Selected) extension.
//!
//! # Outlier detection
//!
//! Envoy's, with Envoy's defaults, fed by the same
//! [`Classify`](watertight_core::Classify) every watertight layer uses;
//! see [`outlier`]. The one default that differs: `always_eject_one`, so a
//! 9-endpoint cluster can eject one endpoint despite the 10% cap.
//!
//! # Per-endpoint failures: outlier detection or breakers
//!
//! Both take a failing endpoint out of rotation; they differ when many
//! fail at once. Outlier detection caps how many endpoints it ejects
//! (`max_ejection_percent`) and a priority level in panic uses ejected
//! endpoints again, so a cluster-wide brownout keeps every endpoint
//! serving. A circuit breaker in `Backpressure` mode has no such cap: when
//! every endpoint's breaker opens, no endpoint is ready and requests wait
//! until a breaker lets a probe through. With zone-aware routing, a whole
//! zone failing is the case to plan for: give `max_ejection_percent` at
//! least one zone's share of endpoints (34 for three equal zones), or keep
//! per-endpoint breakers for it; Envoy's default of 10% ejects one endpoint
//! of a failed zone and leaves that zone's clients retrying into the rest.
//!
//! # Observability
//!
//! A [`BalancerHandle`] reads endpoint counts per zone and state, every
//! endpoint's state, load and RTT estimate, the routing decisions and the
//! outlier log, and ejects by hand. Metrics (label `name`):
//! `watertight_loadbalance_endpoints{zone, state}`,
//! `watertight_loadbalance_ejected_endpoints`,
//! `watertight_loadbalance_zone_local_share`,
//! `watertight_loadbalance_decisions_total{decision}`
//! (`local`/`sampled`/`cross_zone`/`panic`/`any`),
//! `watertight_loadbalance_ejections_total{detection, action}`,
//! `watertight_loadbalance_evictions_total`,
//! `watertight_loadbalance_discovery_errors_total`. Traces use target
//! `watertight_loadbalance`; [`Builder::on_event`] gives typed [`Event`]s.
//!
//! # Sources
//!
//! - Envoy's load-balancing documentation (architecture overview): priority
//!   levels and overprovisioning, degraded endpoints, panic threshold,
//!   zone-aware routing, locality-weighted load balancing, load-balancer
//!   subsets, slow start, the least-request balancer's
//!   `weight / (active + 1)^bias` with its EDF scheduler, ring hash and
//!   Maglev; and its outlier-detection overview and `OutlierDetection`
//!   reference.
//! - M. Mitzenmacher, "The Power of Two Choices in Randomized Load
//!   Balancing", IEEE TPDS 2001.
//! - Finagle's `PeakEwma` load metric and linkerd's use of P2C over it
//!   (also tower's `load::PeakEwma`); tower issue #696 on weighted P2C.
//! - Netflix Ribbon's `ZoneAvoidanceRule` and `ZoneAwareLoadBalancer`.
//! - D. Karger et al., "Consistent Hashing and Random Trees", STOC 1997;
//!   Ketama's point density; D. E. Eisenbud et al., "Maglev: A Fast and
//!   Reliable Software Network Load Balancer", NSDI 2016.
//!
//! # Feature flags
//!
//! - `http`: [`http::HeaderHints`] (server hints from response headers),
//!   [`http::subset_header`] and [`http::hash_header`].
//! - `serde`: `Deserialize`/`Serialize` for [`Config`] and its parts,
//!   durations in humantime (`"10s"`).
//!
//! # Example
//!
//! Three zones, a client in zone `a`, and the client's own cluster spread
//! evenly: zone-aware routing keeps every request in `a`.
//!
//! ```
//! use std::convert::Infallible;
//! use tower::{Service, ServiceExt};
//! use watertight_core::{Change, Endpoint, Locality, Selected};
//! use watertight_loadbalance::Builder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), watertight_core::BoxError> {
//! let endpoint = |ip: &str, zone: &str| {
//!     Endpoint::new(format!("{ip}:80").parse().unwrap()).with_locality(Locality::zone(zone))
//! };
//! let upstream: Vec<Endpoint> = (1..=9)
//!     .map(|i| endpoint(&format!("10.0.0.{i}"), ["a", "b", "c"][i % 3]))
//!     .collect();
//! let clients = vec![endpoint("10.1.0.1", "a"), endpoint("10.1.0.2", "b"), endpoint("10.1.0.3", "c")];
//!
//! let mut balancer = Builder::new()
//!     .name("api")
//!     .local_zone("a")
//!     .local_cluster(futures_util::stream::iter([Ok::<_, Infallible>(Change::Reset(clients))]))
//!     .seed(1)
//!     .build(
//!         futures_util::stream::iter([Ok::<_, Infallible>(Change::Reset(upstream))]),
//!         // Per-endpoint layers (breaker, timeout) would wrap this service.
//!         |_: &Endpoint| {
//!             tower::service_fn(|req: http::Request<()>| async move {
//!                 let selected = req.extensions().get::<Selected>().cloned();
//!                 Ok::<_, Infallible>(selected.map(|s| s.locality().zone.clone()))
//!             })
//!         },
//!     )?;
//!
//! for _ in 0..100 {
//!     let zone = balancer.ready().await?.call(http::Request::new(())).await?;
//!     assert_eq!(zone.as_deref(), Some("a"));
//! }
//! assert_eq!(balancer.handle().decisions().local, 100);
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod config;
pub mod error;
pub mod event;
pub mod future;
mod group;
mod handle;
mod hash;
mod hints;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod layer;
pub mod outlier;
mod pending;
mod plan;
mod service;
mod stats;

pub use builder::Builder;
pub use config::{
    Config, Load, LocalityPolicy, Maglev, PeakEwma, Pick, RingHash, SlowStart, SubsetShare,
    Subsets, ZoneAvoidance, ZoneAware,
};
pub use event::Event;
pub use handle::{
    BalancerHandle, Decision, Decisions, EndpointState, EndpointStatus, Snapshot, ZoneCounts,
    ZoneRouting, ZoneRoutingOff,
};
pub use hash::hash_key;
pub use hints::{NoHints, ServerHints};
pub use layer::BalancerLayer;
pub use outlier::OutlierDetection;
pub use service::Balancer;
