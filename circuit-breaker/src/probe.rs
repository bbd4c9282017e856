//! Half-open probe permits.
//!
//! A [`ProbeGate`] admits at most `permitted` concurrent probes per half-open
//! period. Its state is one `AtomicU64`: the low 32 bits of the breaker
//! generation the gate belongs to, the probes in flight and the probe
//! successes so far, each changed by compare-and-swap, so two callers racing
//! for the last permit cannot both win and a permit is never counted twice.
//!
//! Every breaker transition re-tags the gate with the new generation and
//! zeroes its counts. A [`Permit`] remembers the generation it was taken in:
//! releasing it (on drop, when the probe is cancelled) or reporting its
//! outcome after the breaker moved on touches nothing, so a late or
//! cancelled probe neither counts nor leaks a permit of a later half-open
//! period.
#![cfg_attr(not(watertight_loom), allow(unreachable_pub))]

use std::fmt;
use std::sync::Arc;

use crate::sync::{AtomicU64, Ordering::*};

const GEN_SHIFT: u32 = 32;
const FLIGHT_SHIFT: u32 = 16;
const MASK16: u64 = 0xffff;

fn pack(tag: u32, in_flight: u16, successes: u16) -> u64 {
    (u64::from(tag) << GEN_SHIFT) | (u64::from(in_flight) << FLIGHT_SHIFT) | u64::from(successes)
}

fn tag_of(word: u64) -> u32 {
    (word >> GEN_SHIFT) as u32
}

fn in_flight_of(word: u64) -> u16 {
    ((word >> FLIGHT_SHIFT) & MASK16) as u16
}

fn successes_of(word: u64) -> u16 {
    (word & MASK16) as u16
}

/// The low 32 bits of a generation: enough to tell this half-open period
/// from the last four billion.
fn tag(generation: u64) -> u32 {
    generation as u32
}

/// Admits at most `permitted` concurrent probes per generation. See the
/// [module docs](self).
pub struct ProbeGate {
    word: AtomicU64,
    permitted: u16,
}

impl fmt::Debug for ProbeGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.word.load(Relaxed);
        f.debug_struct("ProbeGate")
            .field("generation", &tag_of(w))
            .field("in_flight", &in_flight_of(w))
            .field("successes", &successes_of(w))
            .field("permitted", &self.permitted)
            .finish()
    }
}

impl ProbeGate {
    /// A gate for `permitted` concurrent probes, tagged with generation 0.
    pub fn new(permitted: u16) -> Self {
        ProbeGate {
            word: AtomicU64::new(pack(0, 0, 0)),
            permitted,
        }
    }

    /// Starts a new period for `generation`: no probe in flight, no success.
    /// Permits of earlier generations no longer count.
    pub fn reset(&self, generation: u64) {
        // A swap rather than a store: as a read-modify-write it is ordered
        // with the permits' compare-and-swaps on the same word, so a release
        // that read the old period cannot land after the new one begins.
        self.word.swap(pack(tag(generation), 0, 0), AcqRel);
    }

    /// Takes a permit for `generation`, if the gate belongs to it and fewer
    /// than `permitted` probes are in flight.
    pub fn acquire(self: &Arc<Self>, generation: u64) -> Option<Permit> {
        let t = tag(generation);
        let mut cur = self.word.load(Acquire);
        loop {
            if tag_of(cur) != t || in_flight_of(cur) >= self.permitted {
                return None;
            }
            let next = pack(t, in_flight_of(cur) + 1, successes_of(cur));
            match self.word.compare_exchange_weak(cur, next, AcqRel, Acquire) {
                Ok(_) => {
                    return Some(Permit {
                        gate: Arc::clone(self),
                        generation,
                        done: false,
                    })
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Gives back one permit of `generation`, counting a success if
    /// `success`. Returns the successes of the period after this one, or
    /// `None` when the gate has moved on to another generation.
    ///
    /// For the owner of a permit taken apart with
    /// [`Permit::into_generation`].
    pub(crate) fn release(&self, generation: u64, success: bool) -> Option<u16> {
        let t = tag(generation);
        let mut cur = self.word.load(Acquire);
        loop {
            if tag_of(cur) != t || in_flight_of(cur) == 0 {
                return None;
            }
            let successes = successes_of(cur).saturating_add(success as u16);
            let next = pack(t, in_flight_of(cur) - 1, successes);
            match self.word.compare_exchange_weak(cur, next, AcqRel, Acquire) {
                Ok(_) => return Some(successes),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Probes in flight in the current period.
    pub fn in_flight(&self) -> u16 {
        in_flight_of(self.word.load(Acquire))
    }

    /// Probe successes in the current period.
    pub fn successes(&self) -> u16 {
        successes_of(self.word.load(Acquire))
    }
}

/// One probe's permit. Dropping it without reporting an outcome gives the
/// permit back and counts nothing.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<ProbeGate>,
    generation: u64,
    done: bool,
}

impl Permit {
    /// Reports a successful probe: gives the permit back and counts the
    /// success. Returns the period's successes so far, or `None` if the gate
    /// has moved on (the result is late and counts nothing).
    #[cfg(any(test, watertight_loom))]
    pub fn succeed(mut self) -> Option<u16> {
        self.done = true;
        self.gate.release(self.generation, true)
    }

    /// Gives the permit back without counting anything. Returns whether the
    /// permit still belonged to the current period.
    #[cfg(any(test, watertight_loom))]
    pub fn release(mut self) -> bool {
        self.done = true;
        self.gate.release(self.generation, false).is_some()
    }

    /// Takes the permit apart: its generation, and the duty to give it back
    /// with [`ProbeGate::release`], which no longer happens on drop.
    pub(crate) fn into_generation(mut self) -> u64 {
        self.done = true;
        self.generation
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.gate.release(self.generation, false);
        }
    }
}

#[cfg(all(test, not(watertight_loom)))]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_permitted_and_releases_on_drop() {
        let gate = Arc::new(ProbeGate::new(2));
        gate.reset(7);
        let a = gate.acquire(7).unwrap();
        let b = gate.acquire(7).unwrap();
        assert!(gate.acquire(7).is_none());
        drop(a);
        assert_eq!(gate.in_flight(), 1);
        let c = gate.acquire(7).unwrap();
        assert_eq!(b.succeed(), Some(1));
        assert!(c.release());
        assert_eq!((gate.in_flight(), gate.successes()), (0, 1));
    }

    #[test]
    fn permits_of_an_earlier_generation_count_nothing() {
        let gate = Arc::new(ProbeGate::new(1));
        gate.reset(1);
        let old = gate.acquire(1).unwrap();
        assert!(
            gate.acquire(2).is_none(),
            "the gate belongs to generation 1"
        );
        gate.reset(3);
        let new = gate.acquire(3).unwrap();
        assert_eq!(old.succeed(), None);
        assert_eq!((gate.in_flight(), gate.successes()), (1, 0));
        drop(new);
        assert_eq!(gate.in_flight(), 0);
    }
}
