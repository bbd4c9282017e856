//! Errors of the retry and hedging layers.
//!
//! [`Retry`](crate::Retry) returns a [`BoxError`]. When it stops retrying a
//! retryable failure, the error it returns is an [`Exhausted`] whose
//! [`source`](std::error::Error::source) is the last real error, so
//! [`is_caused_by`](watertight_core::is_caused_by) still finds the cause, and
//! an outer retry layer sees the mark and does not retry the request again:
//!
//! ```
//! use watertight_core::{find_cause, BoxError};
//! use watertight_retry::error::Exhausted;
//! use watertight_retry::Reason;
//!
//! fn out_of_budget(err: &BoxError) -> bool {
//!     find_cause::<Exhausted>(&**err).is_some_and(|e| e.reason() == Reason::Budget)
//! }
//! ```

use std::error::Error;
use std::fmt;
use std::time::Duration;

use watertight_core::BoxError;

use crate::mark::Reason;

/// The layer stopped retrying a retryable failure; the source is the last
/// attempt's error.
#[derive(Debug)]
pub struct Exhausted {
    reason: Reason,
    attempts: u32,
    source: BoxError,
}

impl Exhausted {
    pub(crate) fn new(reason: Reason, attempts: u32, source: BoxError) -> Self {
        Exhausted {
            reason,
            attempts,
            source,
        }
    }

    /// Why the layer stopped.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The attempts sent, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The last attempt's error.
    pub fn last_error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.source
    }

    /// The last attempt's error, by value.
    pub fn into_last_error(self) -> BoxError {
        self.source
    }
}

impl fmt::Display for Exhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up after {} attempt{} ({}): {}",
            self.attempts,
            if self.attempts == 1 { "" } else { "s" },
            self.reason,
            self.source
        )
    }
}

impl Error for Exhausted {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// The request's overall deadline passed, or too little of it was left to
/// start an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadlineExceeded {
    _priv: (),
}

impl DeadlineExceeded {
    pub(crate) fn new() -> Self {
        DeadlineExceeded { _priv: () }
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request deadline exceeded")
    }
}

impl Error for DeadlineExceeded {}

/// One attempt ran longer than the per-attempt timeout and was cancelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptTimedOut {
    after: Duration,
}

impl AttemptTimedOut {
    pub(crate) fn new(after: Duration) -> Self {
        AttemptTimedOut { after }
    }

    /// The per-attempt timeout that fired.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for AttemptTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempt timed out after {:?}", self.after)
    }
}

impl Error for AttemptTimedOut {}

/// An invalid configuration, naming the field at fault: the configuration
/// error every watertight layer shares, with the component `retry` (for the
/// hedging layer and the budgets too).
pub use watertight_core::ConfigError;

/// The component every [`ConfigError`] of this crate names.
pub(crate) const COMPONENT: &str = "retry";

/// An error in `field` of a retry, hedging or budget configuration.
pub(crate) fn invalid(
    field: &'static str,
    reason: impl Into<std::borrow::Cow<'static, str>>,
) -> ConfigError {
    ConfigError::new(COMPONENT, field, reason)
}
