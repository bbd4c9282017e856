//! A set of endpoints to pick from, with O(1) insertion and removal and the
//! per-set state of the pick algorithms (round-robin cursor, earliest
//! deadline first schedule).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rand::rngs::SmallRng;
use rand::RngCore;

/// "Not a member" in a slot's position table.
pub(crate) const NONE: u32 = u32::MAX;

/// A uniform index below `n` (Lemire's multiply-shift; the bias is below
/// `n / 2^64`).
pub(crate) fn below(rng: &mut SmallRng, n: usize) -> usize {
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}

/// A uniform float in `[0, 1)`.
pub(crate) fn unit(rng: &mut SmallRng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[derive(Debug, Default)]
pub(crate) struct Group {
    pub(crate) members: Vec<u32>,
    /// Sum and sum of squares of the static weights: all weights are equal
    /// iff `n · Σw² = (Σw)²`.
    weight_sum: u64,
    weight_sq: u128,
    /// Members in slow start.
    ramping: u32,
    /// Whether picks follow weights; kept up to date on every change.
    weighted: bool,
    edf: Option<Edf>,
    rr: usize,
}

impl Group {
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether picks must follow weights (EDF) rather than P2C or plain
    /// round robin.
    pub(crate) fn weighted(&self) -> bool {
        self.weighted
    }

    fn update_weighted(&mut self) {
        let n = self.members.len() as u128;
        self.weighted =
            self.ramping > 0 || n * self.weight_sq != u128::from(self.weight_sum).pow(2);
    }

    /// Adds `slot` (whose membership epoch is `epoch`, EDF weight
    /// `edf_weight`); returns its position.
    pub(crate) fn push(
        &mut self,
        slot: u32,
        weight: u32,
        ramping: bool,
        epoch: u32,
        edf_weight: f64,
    ) -> u32 {
        let pos = self.members.len() as u32;
        self.members.push(slot);
        self.weight_sum += u64::from(weight);
        self.weight_sq += u128::from(weight) * u128::from(weight);
        self.ramping += u32::from(ramping);
        self.update_weighted();
        if let Some(edf) = &mut self.edf {
            edf.add(slot, epoch, edf_weight);
        }
        pos
    }

    /// Removes the member at `pos`; returns the slot moved into `pos`, if
    /// any. Its EDF entry goes stale and is dropped lazily.
    pub(crate) fn remove(&mut self, pos: u32, weight: u32, ramping: bool) -> Option<u32> {
        let pos = pos as usize;
        self.members.swap_remove(pos);
        self.weight_sum -= u64::from(weight);
        self.weight_sq -= u128::from(weight) * u128::from(weight);
        self.ramping -= u32::from(ramping);
        self.update_weighted();
        if self.members.is_empty() {
            self.edf = None;
        }
        self.members.get(pos).copied()
    }

    /// Power of two choices without replacement: two distinct members at
    /// random, the cheaper one by `less` (the first drawn on a tie).
    pub(crate) fn p2c(&self, rng: &mut SmallRng, less: impl Fn(u32, u32) -> bool) -> Option<u32> {
        let m = &self.members;
        match m.len() {
            0 => None,
            1 => Some(m[0]),
            n => {
                let a = below(rng, n);
                let mut b = below(rng, n - 1);
                if b >= a {
                    b += 1;
                }
                let (x, y) = (m[a], m[b]);
                Some(if less(y, x) { y } else { x })
            }
        }
    }

    /// P2C over the members `excluded` rejects; `None` if it rejects all.
    pub(crate) fn p2c_excluding(
        &self,
        rng: &mut SmallRng,
        less: impl Fn(u32, u32) -> bool,
        excluded: impl Fn(u32) -> bool,
    ) -> Option<u32> {
        let m = &self.members;
        if m.len() <= 32 {
            let open: Vec<u32> = m.iter().copied().filter(|&s| !excluded(s)).collect();
            return match open.len() {
                0 => None,
                1 => Some(open[0]),
                n => {
                    let a = below(rng, n);
                    let mut b = below(rng, n - 1);
                    if b >= a {
                        b += 1;
                    }
                    let (x, y) = (open[a], open[b]);
                    Some(if less(y, x) { y } else { x })
                }
            };
        }
        // Few members are excluded (one per earlier attempt): sampling finds
        // open ones fast.
        let mut found: Option<u32> = None;
        for _ in 0..64 {
            let s = m[below(rng, m.len())];
            if excluded(s) || found == Some(s) {
                continue;
            }
            match found {
                None => found = Some(s),
                Some(f) => return Some(if less(s, f) { s } else { f }),
            }
        }
        found
    }

    /// The next member in round-robin order that `excluded` does not reject.
    pub(crate) fn round_robin(&mut self, excluded: impl Fn(u32) -> bool) -> Option<u32> {
        let n = self.members.len();
        for _ in 0..n {
            self.rr = self.rr.wrapping_add(1);
            let s = self.members[self.rr % n];
            if !excluded(s) {
                return Some(s);
            }
        }
        None
    }

    /// Earliest deadline first (Envoy's `EdfScheduler`): the member with the
    /// earliest deadline is picked and rescheduled `1 / weight` later, so
    /// each receives picks in proportion to its weight. `epoch_of` and
    /// `weight` read the members' current epoch and weight; entries of an
    /// older epoch are stale.
    pub(crate) fn edf(
        &mut self,
        epoch_of: impl Fn(u32) -> u32,
        weight: impl Fn(u32) -> f64,
        excluded: impl Fn(u32) -> bool,
    ) -> Option<u32> {
        if self.members.is_empty() {
            return None;
        }
        let rebuild = match &self.edf {
            None => true,
            Some(edf) => edf.heap.len() > 2 * self.members.len() + 64,
        };
        if rebuild {
            let mut edf = Edf::default();
            if let Some(old) = &self.edf {
                edf.now = old.now;
                edf.seq = old.seq;
            }
            for &s in &self.members {
                edf.add(s, epoch_of(s), weight(s));
            }
            self.edf = Some(edf);
        }
        let edf = self.edf.as_mut().expect("built above");
        let mut skipped = Vec::new();
        let picked = loop {
            let Some(e) = edf.heap.pop() else {
                break None;
            };
            if epoch_of(e.slot) != e.epoch {
                continue;
            }
            if excluded(e.slot) {
                skipped.push(e);
                continue;
            }
            edf.now = e.deadline;
            edf.add(e.slot, e.epoch, weight(e.slot));
            break Some(e.slot);
        };
        edf.heap.extend(skipped);
        picked
    }

    /// Drops the EDF schedule (the group is no longer weighted).
    pub(crate) fn clear_edf(&mut self) {
        self.edf = None;
    }
}

#[derive(Debug, Default)]
struct Edf {
    heap: BinaryHeap<Entry>,
    now: f64,
    seq: u64,
}

impl Edf {
    fn add(&mut self, slot: u32, epoch: u32, weight: f64) {
        let deadline = self.now + 1.0 / weight.max(1e-12);
        self.heap.push(Entry {
            deadline,
            seq: self.seq,
            slot,
            epoch,
        });
        self.seq += 1;
    }
}

#[derive(Debug)]
struct Entry {
    deadline: f64,
    /// Ties go to the earlier insertion, so the schedule is deterministic.
    seq: u64,
    slot: u32,
    epoch: u32,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    // Reversed: `BinaryHeap` is a max-heap and the earliest deadline must
    // come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .deadline
            .total_cmp(&self.deadline)
            .then(other.seq.cmp(&self.seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn swap_remove_reports_the_moved_member() {
        let mut g = Group::default();
        for s in 0..4 {
            assert_eq!(g.push(s, 100, false, 0, 1.0), s);
        }
        assert_eq!(g.remove(1, 100, false), Some(3));
        assert_eq!(g.members, [0, 3, 2]);
        assert_eq!(g.remove(2, 100, false), None);
        assert!(!g.weighted());
        g.push(9, 5, false, 0, 1.0);
        assert!(g.weighted());
    }

    #[test]
    fn edf_follows_weights_exactly() {
        let mut g = Group::default();
        let weights = [198.0, 1.0, 1.0];
        for s in 0..3 {
            g.push(s, weights[s as usize] as u32, false, 0, 1.0);
        }
        let mut counts = [0u32; 3];
        for _ in 0..20_000 {
            let s = g.edf(|_| 0, |s| weights[s as usize], |_| false).unwrap();
            counts[s as usize] += 1;
        }
        assert_eq!(counts, [19_800, 100, 100]);
    }

    #[test]
    fn p2c_prefers_the_cheaper_of_two() {
        let mut g = Group::default();
        for s in 0..2 {
            g.push(s, 100, false, 0, 1.0);
        }
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..100 {
            assert_eq!(g.p2c(&mut rng, |a, b| a < b), Some(0));
        }
        assert_eq!(g.p2c_excluding(&mut rng, |a, b| a < b, |s| s == 0), Some(1));
        assert_eq!(g.p2c_excluding(&mut rng, |_, _| false, |_| true), None);
    }
}
