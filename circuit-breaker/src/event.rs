//! Typed events, for tests and custom sinks.
//!
//! Register a listener with
//! [`Builder::on_event`](crate::Builder::on_event). It is called after the
//! breaker's internal lock is released, so it may use the breaker's
//! [handle](crate::CircuitBreakerHandle), and it runs on the thread that
//! caused the event: keep it short. Concurrent transitions may reach the
//! listener out of order; [`Transition::generation`] orders them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::State;

/// Something a breaker did.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The breaker changed state (or was reset).
    Transition(Transition),
    /// The breaker rejected a call.
    Rejected(Rejected),
    /// A trip policy fired but the breaker's
    /// [`BreakerGroup`](crate::BreakerGroup) had as many members open as it
    /// allows: the breaker stays closed.
    TripRefused(TripRefused),
}

/// A state change. Every state change is one.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Transition {
    /// The breaker's name.
    pub name: Arc<str>,
    /// The key, for a breaker of a
    /// [`KeyedCircuitBreaker`](crate::KeyedCircuitBreaker).
    pub key: Option<Arc<str>>,
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// Why.
    pub cause: Cause,
    /// The generation the breaker entered; results of calls admitted in an
    /// earlier generation no longer change its state.
    pub generation: u64,
    /// The outcome window when the transition happened.
    pub window: watertight_core::Snapshot,
    /// For a transition to `Open`: how long until the next probe.
    pub open_for: Option<Duration>,
}

/// A rejected call.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Rejected {
    /// The breaker's name.
    pub name: Arc<str>,
    /// The key, for a breaker of a
    /// [`KeyedCircuitBreaker`](crate::KeyedCircuitBreaker).
    pub key: Option<Arc<str>>,
    /// The state that rejected it.
    pub state: State,
    /// See [`Open::retry_after`](crate::error::Open::retry_after).
    pub retry_after: Duration,
}

/// Why a transition happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// Closed → Open: these trip policies fired.
    Tripped(Tripped),
    /// Open → HalfOpen: the open duration passed.
    OpenElapsed,
    /// HalfOpen → Closed: `success_threshold` probes succeeded.
    ProbesSucceeded,
    /// HalfOpen → Open: a probe failed, or (with the slow-call policy on)
    /// took longer than `slow_call_duration`.
    ProbeFailed,
    /// HalfOpen → Open: `max_half_open_duration` passed with every probe
    /// permit taken.
    HalfOpenTimedOut,
    /// Set by hand through the handle (`force_open`, `force_close`,
    /// `disable`, `metrics_only`).
    Manual,
    /// [`CircuitBreakerHandle::reset`](crate::CircuitBreakerHandle::reset).
    Reset,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Tripped(t) => write!(f, "tripped by {t}"),
            Cause::OpenElapsed => f.write_str("open duration elapsed"),
            Cause::ProbesSucceeded => f.write_str("probes succeeded"),
            Cause::ProbeFailed => f.write_str("probe failed"),
            Cause::HalfOpenTimedOut => f.write_str("half-open timed out"),
            Cause::Manual => f.write_str("manual"),
            Cause::Reset => f.write_str("reset"),
        }
    }
}

/// A trip its group refused.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TripRefused {
    /// The breaker's name.
    pub name: Arc<str>,
    /// The key, for a breaker of a
    /// [`KeyedCircuitBreaker`](crate::KeyedCircuitBreaker).
    pub key: Option<Arc<str>>,
    /// The trip that was refused.
    pub cause: Cause,
    /// Members of the group open at the time.
    pub open: u32,
    /// Members of the group.
    pub members: u32,
}

/// A trip policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// The failure rate over the window reached `failure_rate_threshold`.
    FailureRate,
    /// The slow-call rate over the window reached
    /// `slow_call_rate_threshold`.
    SlowCallRate,
    /// `consecutive_failures` failures in a row.
    ConsecutiveFailures,
}

impl Policy {
    const ALL: [Policy; 3] = [
        Policy::FailureRate,
        Policy::SlowCallRate,
        Policy::ConsecutiveFailures,
    ];

    /// `failure_rate`, `slow_call_rate` or `consecutive_failures`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Policy::FailureRate => "failure_rate",
            Policy::SlowCallRate => "slow_call_rate",
            Policy::ConsecutiveFailures => "consecutive_failures",
        }
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The set of trip policies that fired together.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Tripped(u8);

impl Tripped {
    /// No policy.
    pub const fn empty() -> Self {
        Tripped(0)
    }

    /// Whether no policy fired.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether `policy` fired.
    pub const fn contains(self, policy: Policy) -> bool {
        self.0 & policy.bit() != 0
    }

    /// This set plus `policy`.
    #[must_use]
    pub const fn with(self, policy: Policy) -> Self {
        Tripped(self.0 | policy.bit())
    }

    /// The policies that fired.
    pub fn iter(self) -> impl Iterator<Item = Policy> {
        Policy::ALL.into_iter().filter(move |p| self.contains(*p))
    }
}

impl fmt::Debug for Tripped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for Tripped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(p.as_str())?;
        }
        Ok(())
    }
}

/// The listener type stored by the breaker.
pub(crate) type Listener = Arc<dyn Fn(&Event) + Send + Sync>;
