//! The shared vocabulary of watertight.
//!
//! Every watertight layer speaks the types defined here, so a user classifies
//! responses once, configures backoff once and describes endpoints once:
//!
//! - [`BoxError`] and [`is_caused_by`]: the error type layers that add failure
//!   modes return, and how to find a typed cause in it;
//! - [`config`]: [`ConfigError`], the configuration error of every layer,
//!   naming the field at fault, and the checks builders share;
//! - [`classify`]: [`ResponseClass`] and the [`Classify`] trait, used by the
//!   circuit breaker, retries, outlier detection, adaptive limits and chaos
//!   safeguards;
//! - [`hint`]: server hints (`Retry-After`, `grpc-retry-pushback-ms`,
//!   `X-RateLimit-Reset`) parsed into a [`Hint`];
//! - [`backoff`]: constant, linear, exponential and the three jittered backoffs,
//!   capped *before* jittering;
//! - [`window`]: lock-free count and time sliding windows with O(1) snapshots;
//! - [`endpoint`]: the endpoint model shared by discovery and load balancing;
//! - [`ext`]: typed request extensions through which layers leave notes for
//!   each other (the endpoint a balancer chose, the endpoints a retry tried).
//!
//! # Feature flags
//!
//! - `http`: [`classify::ServerErrorsAsFailures`] for `http::Response` and
//!   [`hint::from_headers`] for `http::HeaderMap`.
//! - `serde`: `Deserialize`/`Serialize` for configuration types and the
//!   endpoint model.
//!
//! # Example
//!
//! ```
//! use watertight_core::{Classify, ErrorsAsFailures, ResponseClass};
//!
//! let classify = ErrorsAsFailures;
//! let ok: Result<u32, &str> = Ok(1);
//! let err: Result<u32, &str> = Err("refused");
//! assert_eq!(classify.classify(&ok), ResponseClass::Success);
//! assert_eq!(classify.classify(&err), ResponseClass::Failure { retryable: true });
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backoff;
pub mod classify;
pub mod config;
pub mod endpoint;
mod error;
pub mod ext;
pub mod hint;
pub mod window;

pub use backoff::{Backoff, InvalidBackoff};
pub use classify::{Classify, ClassifyFn, ErrorsAsFailures, ResponseClass};
pub use config::ConfigError;
pub use endpoint::{Address, Change, Endpoint, EndpointId, Health, Locality, Selected};
pub use error::{find_cause, is_caused_by, BoxError};
pub use ext::{Attempted, Extensions};
pub use hint::Hint;
pub use window::{CountWindow, Outcome, Snapshot, TimeWindow};
