//! watertight: composable `tower` layers for failure-first Rust services.
//!
//! This facade re-exports the member crates behind features of the same
//! names.
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
