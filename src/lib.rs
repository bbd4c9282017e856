//! watertight: composable `tower` layers for failure-first Rust services.
//!
//! This facade re-exports the member crates behind features of the same
//! names.
//!
//! # Feature flags
//!
//! - `core` (default): [`core`], the shared vocabulary.
//! - `discovery`: [`discovery`], endpoint sources (static, file) and their guards; `dns` and `etcd` add its DNS and etcd sources (`etcd` needs `protoc` to build).
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "core")]
#[doc(inline)]
pub use watertight_core as core;

#[cfg(feature = "discovery")]
#[doc(inline)]
pub use watertight_discovery as discovery;
