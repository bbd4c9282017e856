//! Errors of the bulkhead layers.
//!
//! Rejections are returned inside a [`BoxError`](watertight_core::BoxError);
//! find them with [`is_caused_by`](watertight_core::is_caused_by) or
//! [`find_cause`](watertight_core::find_cause):
//!
//! ```
//! use watertight_bulkhead::error::{Full, Throttled};
//! use watertight_core::{is_caused_by, BoxError};
//!
//! fn rejected_locally(err: &BoxError) -> bool {
//!     is_caused_by::<Full>(&**err) || is_caused_by::<Throttled>(&**err)
//! }
//! ```
//!
//! Both carry a `retry_after` hint; with feature `http`,
//! `http::ErrorResponse` turns them into a
//! `503 Service Unavailable` with a `Retry-After` header.

use std::fmt;
use std::time::Duration;

use crate::Criticality;

/// Why a limiter turned a request away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Every permit was taken and the limiter has no queue.
    AtLimit,
    /// Every permit was taken and the queue was full.
    QueueFull,
    /// The request waited `max_wait` in the queue without getting a permit.
    WaitElapsed,
    /// Utilisation was too high for a request of this criticality (a
    /// [`PartitionedBulkhead`](crate::PartitionedBulkhead) sheds the least
    /// critical requests first).
    Shed(Criticality),
}

impl Reason {
    /// `at_limit`, `queue_full`, `wait_elapsed` or `shed`: the `reason`
    /// label of the rejection counters.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::AtLimit => "at_limit",
            Reason::QueueFull => "queue_full",
            Reason::WaitElapsed => "wait_elapsed",
            Reason::Shed(_) => "shed",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bulkhead or concurrency limit rejected the request without calling the
/// inner service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Full {
    reason: Reason,
    limit: u32,
    waited: Duration,
    retry_after: Duration,
}

impl Full {
    pub(crate) fn new(reason: Reason, limit: u32, waited: Duration, retry_after: Duration) -> Self {
        Full {
            reason,
            limit,
            waited,
            retry_after,
        }
    }

    /// Why.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The concurrency limit when the request was rejected.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// How long the request waited in the queue (zero when rejected at
    /// once).
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// How long a client should wait before trying again: the limiter's
    /// configured `retry_after` (the `Retry-After` of the HTTP mapping).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            Reason::AtLimit => write!(f, "bulkhead is full ({} in flight)", self.limit),
            Reason::QueueFull => write!(
                f,
                "bulkhead is full ({} in flight) and so is its queue",
                self.limit
            ),
            Reason::WaitElapsed => write!(
                f,
                "bulkhead is full ({} in flight); waited {:?} in its queue",
                self.limit, self.waited
            ),
            Reason::Shed(c) => write!(
                f,
                "bulkhead is near its limit of {} and shed a {c} request",
                self.limit
            ),
        }
    }
}

impl std::error::Error for Full {}

/// Client-side throttling ([`Admission`](crate::Admission)) rejected the
/// request locally, as the backend has been rejecting most requests.
#[derive(Clone, Debug, PartialEq)]
pub struct Throttled {
    probability: f64,
    retry_after: Duration,
}

impl Throttled {
    pub(crate) fn new(probability: f64, retry_after: Duration) -> Self {
        Throttled {
            probability,
            retry_after,
        }
    }

    /// The rejection probability the request was rejected with.
    pub fn probability(&self) -> f64 {
        self.probability
    }

    /// How long a client should wait before trying again.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for Throttled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request throttled locally (rejection probability {:.2})",
            self.probability
        )
    }
}

impl std::error::Error for Throttled {}

/// An invalid configuration, naming the field at fault: the configuration
/// error every watertight layer shares, with the component `bulkhead`.
pub use watertight_core::ConfigError;

/// The validation rules the configurations share, beyond
/// [`watertight_core::config`]'s.
pub(crate) mod check {
    use std::borrow::Cow;
    use std::time::Duration;

    use watertight_core::config;

    use super::ConfigError;

    /// The component every [`ConfigError`] of this crate names.
    pub(crate) const COMPONENT: &str = "bulkhead";

    /// The largest concurrency limit and queue accepted: the permit word
    /// counts in 32 bits and must never overflow.
    pub(crate) const MAX_LIMIT: u32 = 1 << 30;

    /// An error in `field` of a bulkhead configuration.
    pub(crate) fn invalid(
        field: impl Into<Cow<'static, str>>,
        reason: impl Into<Cow<'static, str>>,
    ) -> ConfigError {
        ConfigError::new(COMPONENT, field, reason)
    }

    /// A concurrency limit: in `1..=MAX_LIMIT`.
    pub(crate) fn limit(field: &'static str, v: u32) -> Result<(), ConfigError> {
        config::count(COMPONENT, field, v.into(), MAX_LIMIT.into())
    }

    /// The queue of a limiter: `max_queue` at most `MAX_LIMIT`, `max_wait`
    /// not zero.
    pub(crate) fn queue(max_queue: u32, max_wait: Duration) -> Result<(), ConfigError> {
        if max_queue > MAX_LIMIT {
            return Err(invalid(
                "max_queue",
                format!("must be at most {MAX_LIMIT}, got {max_queue}"),
            ));
        }
        config::non_zero(COMPONENT, "max_wait", max_wait)
    }

    /// A count of samples or steps: at least 1.
    pub(crate) fn at_least_one(field: &'static str, v: u32) -> Result<(), ConfigError> {
        if v == 0 {
            Err(invalid(field, "must be at least 1"))
        } else {
            Ok(())
        }
    }

    /// `min <= initial <= max`, every one a valid limit.
    pub(crate) fn limits(min: u32, initial: u32, max: u32) -> Result<(), ConfigError> {
        limit("min_limit", min)?;
        limit("max_limit", max)?;
        if min > max {
            return Err(invalid(
                "min_limit",
                format!("must not exceed `max_limit` ({max}), got {min}"),
            ));
        }
        if initial < min || initial > max {
            return Err(invalid(
                "initial_limit",
                format!("must be in `min_limit..=max_limit` ({min}..={max}), got {initial}"),
            ));
        }
        Ok(())
    }
}
