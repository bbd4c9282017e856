//! The admission logic of [`PartitionedBulkhead`](crate::PartitionedBulkhead):
//! a total limit shared by partitions that each have a guaranteed share, and
//! criticality fractions that shed the least critical requests first.
//!
//! A request of partition `p` and criticality `c` is admitted when
//!
//! ```text
//! total_in_flight < ⌈fraction(c) × limit⌉                        (borrowing idle capacity)
//!   or in_flight(p) < ⌈fraction(c) × ⌈share(p) × limit⌉⌉        (its guarantee)
//! ```
//!
//! the rule of Netflix's partitioned limiter (`AbstractPartitionedLimiter`:
//! reject only when the total is at its limit *and* the partition is over
//! its share). A partition can always reach its guarantee, however much the
//! others borrowed; the price is that the total may overshoot the limit by
//! what borrowers hold beyond their shares while owners reclaim theirs, at
//! most `limit + Σ guarantees` (each path admits at most its own bound).
//!
//! Lock-free: both counters are incremented first and the request is
//! admitted on the values seen before its own increments, or both are
//! decremented again. A request counts itself before the check, so two
//! racing for the last slot cannot both get it; a rejected attempt may
//! briefly make a racing request see one more in flight than admitted
//! (conservative: never admits beyond the bounds).
#![cfg_attr(not(watertight_loom), allow(unreachable_pub))]

use std::fmt;

use crate::sync::{AtomicU32, Ordering::SeqCst};

/// `⌈x⌉`, forgiving the float error of products such as `0.3 × 100`.
fn ceil(x: f64) -> u32 {
    (x - 1e-9).ceil().max(0.0) as u32
}

/// One partition's counters.
struct Part {
    share: f64,
    in_flight: AtomicU32,
    /// `⌈fraction(c) × guarantee⌉` per criticality.
    allowed: [AtomicU32; 3],
}

/// What [`Gate::try_acquire`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Everything is taken, even for a critical request.
    AtLimit,
    /// A more critical request would have been admitted.
    Shed,
}

/// Partitioned, criticality-aware admission. See the [module docs](self).
pub struct Gate {
    limit: AtomicU32,
    total: AtomicU32,
    /// `⌈fraction(c) × limit⌉` per criticality.
    total_allowed: [AtomicU32; 3],
    parts: Box<[Part]>,
    fractions: [f64; 3],
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("partitions", &self.parts.len())
            .finish()
    }
}

impl Gate {
    /// A gate of `limit` for partitions with these `shares`, admitting a
    /// request of criticality index `c` (sheddable, default, critical) up to
    /// `fractions[c]` of each bound.
    pub fn new(limit: u32, shares: &[f64], fractions: [f64; 3]) -> Self {
        let gate = Gate {
            limit: AtomicU32::new(limit),
            total: AtomicU32::new(0),
            total_allowed: [0, 0, 0].map(AtomicU32::new),
            parts: shares
                .iter()
                .map(|&share| Part {
                    share,
                    in_flight: AtomicU32::new(0),
                    allowed: [0, 0, 0].map(AtomicU32::new),
                })
                .collect(),
            fractions,
        };
        gate.set_limit(limit);
        gate
    }

    /// Sets the total limit and recomputes every bound; returns the previous
    /// limit. Nothing held is revoked.
    pub fn set_limit(&self, limit: u32) -> u32 {
        let old = self.limit.swap(limit, SeqCst);
        for (c, fraction) in self.fractions.iter().enumerate() {
            self.total_allowed[c].store(ceil(fraction * f64::from(limit)), SeqCst);
            for p in self.parts.iter() {
                let guarantee = ceil(p.share * f64::from(limit));
                p.allowed[c].store(ceil(fraction * f64::from(guarantee)), SeqCst);
            }
        }
        old
    }

    /// The total limit.
    pub fn limit(&self) -> u32 {
        self.limit.load(SeqCst)
    }

    /// Requests in flight, all partitions together.
    pub fn in_flight(&self) -> u32 {
        self.total.load(SeqCst)
    }

    /// Requests in flight in partition `part`.
    pub fn part_in_flight(&self, part: usize) -> u32 {
        self.parts[part].in_flight.load(SeqCst)
    }

    /// Partition `part`'s guarantee, `⌈share × limit⌉`.
    pub fn guarantee(&self, part: usize) -> u32 {
        ceil(self.parts[part].share * f64::from(self.limit()))
    }

    /// Admits a request of partition `part` and criticality index `c`, or
    /// says why not. An admitted request must be [`release`](Self::release)d.
    #[inline]
    pub fn try_acquire(&self, part: usize, c: usize) -> Result<(), Refusal> {
        let p = &self.parts[part];
        let total = self.total.fetch_add(1, SeqCst);
        let mine = p.in_flight.fetch_add(1, SeqCst);
        if total < self.total_allowed[c].load(SeqCst) || mine < p.allowed[c].load(SeqCst) {
            return Ok(());
        }
        p.in_flight.fetch_sub(1, SeqCst);
        self.total.fetch_sub(1, SeqCst);
        const CRITICAL: usize = 2;
        let critical_would_pass = total < self.total_allowed[CRITICAL].load(SeqCst)
            || mine < p.allowed[CRITICAL].load(SeqCst);
        Err(if c < CRITICAL && critical_would_pass {
            Refusal::Shed
        } else {
            Refusal::AtLimit
        })
    }

    /// Gives back a request of partition `part`.
    #[inline]
    pub fn release(&self, part: usize) {
        self.parts[part].in_flight.fetch_sub(1, SeqCst);
        self.total.fetch_sub(1, SeqCst);
    }
}

#[cfg(all(test, not(watertight_loom)))]
mod tests {
    use super::*;

    const ALL: [f64; 3] = [1.0, 1.0, 1.0];

    #[test]
    fn guarantees_are_ceilings_of_the_share() {
        let g = Gate::new(100, &[0.3, 0.005, 0.0], ALL);
        assert_eq!((g.guarantee(0), g.guarantee(1), g.guarantee(2)), (30, 1, 0));
        g.set_limit(10);
        assert_eq!((g.guarantee(0), g.guarantee(1)), (3, 1));
    }

    #[test]
    fn a_partition_reaches_its_guarantee_after_others_borrowed_everything() {
        let g = Gate::new(10, &[0.5, 0.5], ALL);
        for _ in 0..10 {
            g.try_acquire(0, 1).unwrap();
        }
        assert_eq!(g.try_acquire(0, 1), Err(Refusal::AtLimit));
        for _ in 0..5 {
            g.try_acquire(1, 1).unwrap();
        }
        assert_eq!(g.try_acquire(1, 1), Err(Refusal::AtLimit));
        assert_eq!(g.in_flight(), 15, "overshoot bounded by the guarantee");
    }

    #[test]
    fn sheddable_requests_stop_at_their_fraction() {
        let g = Gate::new(10, &[0.0], [0.8, 0.9, 1.0]);
        for _ in 0..8 {
            g.try_acquire(0, 0).unwrap();
        }
        assert_eq!(g.try_acquire(0, 0), Err(Refusal::Shed));
        g.try_acquire(0, 1).unwrap();
        assert_eq!(g.try_acquire(0, 1), Err(Refusal::Shed));
        g.try_acquire(0, 2).unwrap();
        assert_eq!(g.try_acquire(0, 2), Err(Refusal::AtLimit));
        g.release(0);
        assert_eq!(g.in_flight(), 9);
    }
}
