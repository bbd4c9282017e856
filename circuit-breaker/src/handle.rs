//! Observing and controlling a breaker at run time.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::breaker::Breaker;
use crate::event::Cause;
use crate::State;

/// Observes and controls one breaker.
///
/// # Clone
///
/// Cheap: clones share the breaker (an `Arc`), as do the
/// [`CircuitBreaker`](crate::CircuitBreaker) services it came from.
///
/// Manual states stay until changed by hand: [`force_open`](Self::force_open)
/// rejects every call, [`disable`](Self::disable) passes every call and
/// records nothing, [`metrics_only`](Self::metrics_only) passes every call
/// and records it without ever tripping. [`force_close`](Self::force_close)
/// and [`reset`](Self::reset) return to automatic operation.
#[derive(Clone, Debug)]
pub struct CircuitBreakerHandle {
    pub(crate) breaker: Arc<Breaker>,
}

impl CircuitBreakerHandle {
    pub(crate) fn new(breaker: Arc<Breaker>) -> Self {
        CircuitBreakerHandle { breaker }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.breaker.name
    }

    /// The current state: one atomic load.
    pub fn state(&self) -> State {
        self.breaker.state()
    }

    /// The breaker's counters at this instant.
    pub fn snapshot(&self) -> Snapshot {
        self.breaker.snapshot()
    }

    /// Rejects every call until changed by hand. Returns whether the state
    /// changed.
    pub fn force_open(&self) -> bool {
        self.manual(State::ForcedOpen)
    }

    /// Closes the breaker: the window, the consecutive-failure count and
    /// the open backoff start over (the window is kept when coming from
    /// `MetricsOnly`). Returns whether the state changed.
    pub fn force_close(&self) -> bool {
        self.manual(State::Closed)
    }

    /// Passes every call and records nothing until changed by hand.
    /// Returns whether the state changed.
    pub fn disable(&self) -> bool {
        self.manual(State::Disabled)
    }

    /// Passes every call and records it, but never trips, until changed by
    /// hand. Returns whether the state changed.
    pub fn metrics_only(&self) -> bool {
        self.manual(State::MetricsOnly)
    }

    /// Returns to a fresh `Closed` breaker: window, consecutive failures,
    /// open backoff and the cumulative counters of [`Snapshot`] all start
    /// over, and results of calls admitted before the reset are ignored.
    /// Always emits a transition (cause [`Cause::Reset`]).
    pub fn reset(&self) {
        self.breaker
            .transition(None, State::Closed, Cause::Reset, Instant::now());
    }

    fn manual(&self, to: State) -> bool {
        self.breaker
            .transition(None, to, Cause::Manual, Instant::now())
    }

    /// Whether two handles control the same breaker.
    pub fn same_breaker(&self, other: &CircuitBreakerHandle) -> bool {
        Arc::ptr_eq(&self.breaker, &other.breaker)
    }
}

/// A breaker's state and counters at one instant.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The state.
    pub state: State,
    /// The generation: how many transitions the breaker has made.
    pub generation: u64,
    /// The outcome window of the rate policies (empty when no rate policy
    /// is on).
    pub window: watertight_core::Snapshot,
    /// Failures in a row so far.
    pub consecutive_failures: u32,
    /// When `Open` or `ForcedOpen`: the time until the next probe
    /// ([`Duration::MAX`] when forced).
    pub retry_after: Option<Duration>,
    /// When `HalfOpen`: probes in flight.
    pub probes_in_flight: u32,
    /// When `HalfOpen`: probe successes so far.
    pub probe_successes: u32,
    /// Times the breaker opened (tripped, or a probe failed or timed out)
    /// since it was built or reset.
    pub trips: u64,
    /// Calls rejected since it was built or reset.
    pub rejected: u64,
    /// Results that arrived after the breaker had moved on from the state
    /// they were admitted in, and so were not counted.
    pub late_results: u64,
    /// State changes since it was built or reset.
    pub transitions: u64,
}
