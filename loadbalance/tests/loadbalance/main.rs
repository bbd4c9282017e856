//! The load balancer's behaviour, pinned test by test. Time is virtual and
//! every balancer seeded, so every share is deterministic.

mod support;

#[cfg(feature = "serde")]
mod config;
mod hashing;
mod load;
mod locality;
mod model;
mod outlier;
mod readiness;
mod real_servers;
#[cfg(feature = "http")]
mod weights;
mod zone_aware;
