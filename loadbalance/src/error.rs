//! Errors of the balancer.
//!
//! The balancer returns a [`BoxError`](watertight_core::BoxError): the
//! endpoint service's own error, or one of the structs here. Find them with
//! [`is_caused_by`](watertight_core::is_caused_by):
//!
//! ```
//! use watertight_core::{is_caused_by, BoxError};
//! use watertight_loadbalance::error::NoHealthyEndpoints;
//!
//! fn shed(err: &BoxError) -> bool {
//!     is_caused_by::<NoHealthyEndpoints>(&**err)
//! }
//! # let err: BoxError = "x".into();
//! # assert!(!shed(&err));
//! ```

use std::fmt;

/// The chosen priority level was in panic (too few healthy endpoints) and
/// the balancer is configured to fail such requests
/// ([`Config::fail_traffic_on_panic`](crate::Config::fail_traffic_on_panic),
/// Envoy's `fail_traffic_on_panic`) instead of spreading them over every
/// endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoHealthyEndpoints {
    priority: u8,
}

impl NoHealthyEndpoints {
    pub(crate) fn new(priority: u8) -> Self {
        NoHealthyEndpoints { priority }
    }

    /// The priority level that was in panic.
    pub fn priority(&self) -> u8 {
        self.priority
    }
}

impl fmt::Display for NoHealthyEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no healthy endpoint: priority {} is in panic and panic traffic fails",
            self.priority
        )
    }
}

impl std::error::Error for NoHealthyEndpoints {}

/// An invalid configuration, naming the field at fault: watertight-core's
/// [`ConfigError`], whose component is `load balancer`.
pub use watertight_core::ConfigError;

/// The component the balancer's configuration errors name.
pub(crate) const COMPONENT: &str = "load balancer";
