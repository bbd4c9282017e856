//! Errors of the circuit breaker.
//!
//! Rejections are returned inside a [`BoxError`](watertight_core::BoxError);
//! find them with [`is_caused_by`](watertight_core::is_caused_by) or
//! [`find_cause`](watertight_core::find_cause):
//!
//! ```
//! use watertight_circuit_breaker::error::Open;
//! use watertight_core::{find_cause, BoxError};
//!
//! fn retry_after(err: &BoxError) -> Option<std::time::Duration> {
//!     find_cause::<Open>(&**err).map(Open::retry_after)
//! }
//! ```

use std::fmt;
use std::time::Duration;

use crate::State;

/// The breaker rejected the call without calling the inner service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    retry_after: Duration,
    state: State,
}

impl Open {
    pub(crate) fn new(state: State, retry_after: Duration) -> Self {
        Open { retry_after, state }
    }

    /// The time until the breaker admits its next probe.
    ///
    /// - `Open`: the rest of the open duration;
    /// - `HalfOpen` (every probe permit is taken): zero, since a permit may
    ///   come back at any moment;
    /// - `ForcedOpen`: [`Duration::MAX`], as no probe is scheduled.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The state that rejected the call: `Open`, `HalfOpen` or
    /// `ForcedOpen`.
    pub fn state(&self) -> State {
        self.state
    }
}

impl fmt::Display for Open {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state {
            State::HalfOpen => f.write_str("circuit breaker is half-open and every probe is taken"),
            State::ForcedOpen => f.write_str("circuit breaker is forced open"),
            _ => write!(
                f,
                "circuit breaker is open; next probe in {:?}",
                self.retry_after
            ),
        }
    }
}

impl std::error::Error for Open {}

/// A keyed breaker already holds its maximum number of keys, none of them
/// idle, and refused to create one more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TooManyKeys {
    max: usize,
}

impl TooManyKeys {
    pub(crate) fn new(max: usize) -> Self {
        TooManyKeys { max }
    }

    /// The configured maximum number of keys.
    pub fn max_keys(&self) -> usize {
        self.max
    }
}

impl fmt::Display for TooManyKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "keyed circuit breaker holds its maximum of {} keys",
            self.max
        )
    }
}

impl std::error::Error for TooManyKeys {}

/// An invalid configuration, naming the field at fault: watertight-core's
/// [`ConfigError`], whose component is `circuit breaker`.
pub use watertight_core::ConfigError;

/// The component the breaker's configuration errors name.
pub(crate) const COMPONENT: &str = "circuit breaker";
