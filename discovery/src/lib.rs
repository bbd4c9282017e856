//! Service discovery for watertight: where the endpoints of a service are,
//! kept up to date, and kept sane when the registry is not.
//!
//! Every source is a [`Stream`](futures_core::Stream) of
//! `Result<`[`Change`](watertight_core::Change)`, `[`Error`]`>` (the
//! endpoint model of `watertight-core`, shared with the load balancer):
//!
//! - [`Static`]: a fixed list;
//! - [`File`]: a JSON, TOML or YAML list of endpoints, reloaded when it
//!   changes; an invalid edit is an error naming file, line and field, and
//!   the last good set stays ([`mod@file`]);
//! - [`Dns`]: A/AAAA and SRV records refreshed on their TTL, the way to
//!   discover Kubernetes headless services ([`dns`]);
//! - [`Etcd`]: endpoints as JSON under a key prefix, watched, resumed after
//!   outages, re-read after compaction; and [`Registration`], which keeps this
//!   instance registered under a lease ([`etcd`]).
//!
//! A source never ends because of an error: it yields the error, keeps its
//! set and carries on. Any source can be put behind a [`Guard`]
//! ([`SourceExt::guarded`]): last known good set on backend errors,
//! Eureka-style self-preservation against mass removals, debouncing, and the
//! metrics (`watertight_discovery_*`) and traces (target
//! `watertight_discovery`) of [`guard`]. And any source becomes a
//! [`tower::discover::Discover`] for tower's balancers with
//! [`SourceExt::into_discover`], given how to build a service for an
//! endpoint.
//!
//! # Feature flags
//!
//! - `file` (default): [`File`] (notify, serde_json, toml, YAML).
//! - `dns`: [`Dns`] (hickory-resolver).
//! - `etcd`: [`Etcd`] and [`Registration`], and the
//!   [`PrefixWatch`](etcd::PrefixWatch) behind `Etcd` for other values
//!   (etcd-client; building needs `protoc`, Debian package
//!   `protobuf-compiler`).
//! - `serde`: `Deserialize` for [`Guard`], durations in humantime (`"30s"`).
//!
//! # Example
//!
//! A file of endpoints, guarded, feeding tower's power-of-two-choices
//! balancer:
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use tower::balance::p2c::Balance;
//! use tower::load::Constant;
//! use tower::{Service, ServiceExt};
//! use watertight_core::Endpoint;
//! use watertight_discovery::{File, Guard, SourceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), watertight_core::BoxError> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("endpoints.toml");
//! std::fs::write(
//!     &path,
//!     r#"
//!     [[endpoints]]
//!     addr = "10.0.0.1:8080"
//!     locality = { zone = "eu-west-1a" }
//!
//!     [[endpoints]]
//!     addr = "10.0.0.2:8080"
//!     locality = { zone = "eu-west-1b" }
//!     "#,
//! )?;
//!
//! let guard = Guard::builder()
//!     .name("api")
//!     .confirm_after(Duration::from_secs(30))
//!     .build()?;
//! let discover = File::new(&path)?
//!     .guarded(&guard)
//!     .into_discover(|e: &Endpoint| {
//!         // Build the real client for `e.addr` here.
//!         let addr = e.addr.to_string();
//!         Constant::new(
//!             tower::service_fn(move |_req: ()| {
//!                 let addr = addr.clone();
//!                 async move { Ok::<_, Infallible>(addr) }
//!             }),
//!             1,
//!         )
//!     });
//! let mut api = Balance::new(discover);
//! let served_by = api.ready().await?.call(()).await?;
//! assert!(served_by.starts_with("10.0.0."));
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod discover;
#[cfg(feature = "dns")]
#[cfg_attr(docsrs, doc(cfg(feature = "dns")))]
pub mod dns;
#[cfg(any(feature = "file", feature = "dns", feature = "etcd"))]
mod driver;
pub mod error;
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub mod etcd;
mod ext;
#[cfg(feature = "file")]
#[cfg_attr(docsrs, doc(cfg(feature = "file")))]
pub mod file;
pub mod guard;
mod set;
mod static_list;
#[cfg(any(feature = "file", feature = "etcd"))]
mod wire;

pub use discover::ServiceDiscover;
#[cfg(feature = "dns")]
pub use dns::{Dns, DnsBuilder};
pub use error::Error;
#[cfg(feature = "etcd")]
pub use etcd::{Etcd, EtcdBuilder, Registration, RegistrationBuilder};
pub use ext::SourceExt;
#[cfg(feature = "file")]
pub use file::{File, FileBuilder, Format};
pub use guard::{Guard, GuardBuilder, GuardHandle, Guarded};
pub use static_list::Static;
