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

use std::borrow::Cow;
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

/// An invalid configuration, naming the field at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: Cow<'static, str>,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, reason: impl Into<Cow<'static, str>>) -> Self {
        ConfigError {
            field,
            reason: reason.into(),
        }
    }

    /// The configuration field at fault, as spelled in the builder and the
    /// serde configuration (`outlier_detection.interval` for a nested one).
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid load balancer configuration: `{}` {}",
            self.field, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}
