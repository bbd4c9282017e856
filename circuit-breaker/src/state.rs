//! The breaker's states and how one `u64` holds a state and its generation.

use std::fmt;

/// The state of a circuit breaker.
///
/// `Closed`, `Open` and `HalfOpen` follow from the calls' outcomes; the other
/// three are set by hand through the
/// [`CircuitBreakerHandle`](crate::CircuitBreakerHandle) and stay until
/// changed by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls pass and their outcomes are recorded; a trip policy opens it.
    Closed,
    /// Calls are rejected until the open duration has passed.
    Open,
    /// A limited number of probe calls pass; their outcomes close or reopen
    /// the breaker.
    HalfOpen,
    /// Every call is rejected until the breaker is closed, reset, disabled or
    /// switched to metrics-only by hand.
    ForcedOpen,
    /// Every call passes and nothing is recorded.
    Disabled,
    /// Every call passes and outcomes are recorded, but the breaker never
    /// trips: for trying a configuration on live traffic.
    MetricsOnly,
}

impl State {
    const ALL: [State; 6] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
        State::MetricsOnly,
    ];

    /// The lowercase name used in metrics labels and traces: `closed`,
    /// `open`, `half_open`, `forced_open`, `disabled`, `metrics_only`.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
            State::MetricsOnly => "metrics_only",
        }
    }

    /// The value of the `watertight_circuit_breaker_state` gauge: 0 closed,
    /// 1 open, 2 half-open, 3 forced open, 4 disabled, 5 metrics-only.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Whether calls are rejected in this state (`Open`, `ForcedOpen`).
    /// A half-open breaker admits probes.
    pub const fn is_open(self) -> bool {
        matches!(self, State::Open | State::ForcedOpen)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Low bits of the state word that hold the state; the rest is the
/// generation, bumped by every transition.
const STATE_BITS: u32 = 3;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

/// The state word: state and generation in one atomic value, so one load
/// tells a call both what to do and which period its result belongs to.
pub(crate) const fn pack(state: State, generation: u64) -> u64 {
    (generation << STATE_BITS) | state as u64
}

pub(crate) const fn state_of(word: u64) -> State {
    State::ALL[(word & STATE_MASK) as usize]
}

pub(crate) const fn generation_of(word: u64) -> u64 {
    word >> STATE_BITS
}

/// Whether the word is `Closed` or `MetricsOnly`: the states whose calls are
/// admitted and recorded without a probe permit.
#[inline]
pub(crate) const fn is_recording(word: u64) -> bool {
    let s = word & STATE_MASK;
    s == State::Closed as u64 || s == State::MetricsOnly as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for s in State::ALL {
            let w = pack(s, 12345);
            assert_eq!((state_of(w), generation_of(w)), (s, 12345));
            assert_eq!(
                is_recording(w),
                matches!(s, State::Closed | State::MetricsOnly)
            );
            assert_eq!(State::ALL[s.code() as usize], s);
        }
    }
}
