//! Consistent hashing: a hash ring (Karger et al. 1997; Envoy's
//! `ring_hash` with Ketama's fixed point density) and Maglev (Eisenbud et al., "Maglev: A Fast and
//! Reliable Software Network Load Balancer", NSDI 2016, with Envoy's
//! weighting). Both place endpoints by their id, so every client builds the
//! same table from the same membership, and both move only about `1/N` of
//! the keys when one of `N` endpoints leaves.

use crate::group::NONE;

/// A stable 64-bit hash of `bytes`: FNV-1a, then the MurmurHash3
/// finalizer. The same on every platform and build, so clients agree.
///
/// Use it in a key extractor:
///
/// ```
/// use watertight_loadbalance::hash_key;
///
/// assert_eq!(hash_key(b"user-42"), hash_key(b"user-42"));
/// assert_ne!(hash_key(b"user-42"), hash_key(b"user-43"));
/// ```
pub fn hash_key(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// The MurmurHash3 64-bit finalizer: spreads every input bit over the
/// output.
pub(crate) fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// Ring points per 100 of weight.
const POINTS_PER_WEIGHT: f64 = 160.0;

/// An endpoint as a table is built from it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Member<'a> {
    pub(crate) slot: u32,
    pub(crate) id: &'a str,
    pub(crate) weight: u32,
}

/// A table mapping key hashes to slots.
#[derive(Debug)]
pub(crate) enum Table {
    Ring(Ring),
    Maglev(MaglevTable),
}

impl Table {
    /// The `attempt`-th candidate for key hash `h` (0 is the owner).
    pub(crate) fn candidate(&self, h: u64, attempt: u32) -> Option<u32> {
        match self {
            Table::Ring(r) => r.candidate(h, attempt),
            Table::Maglev(m) => m.candidate(h, attempt),
        }
    }
}

/// A hash ring: each endpoint owns points in proportion to its weight; a
/// key belongs to the first point at or after its hash.
#[derive(Debug)]
pub(crate) struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// Each endpoint gets [`POINTS_PER_WEIGHT`] points per 100 of weight
    /// (Ketama's density), all scaled up when the ring would be smaller
    /// than `min_ring_size` and down when larger than `max_ring_size`.
    /// While no scaling applies, an endpoint's points depend on nothing but
    /// its id and weight, so one leaving moves only its own keys.
    pub(crate) fn build(members: &[Member<'_>], min_ring_size: u64, max_ring_size: u64) -> Ring {
        let density = |w: u32| POINTS_PER_WEIGHT * f64::from(w) / 100.0;
        let target: f64 = members.iter().map(|m| density(m.weight)).sum();
        if members.is_empty() || target == 0.0 {
            return Ring { points: Vec::new() };
        }
        let scale = if target < min_ring_size as f64 {
            min_ring_size as f64 / target
        } else if target > max_ring_size as f64 {
            max_ring_size as f64 / target
        } else {
            1.0
        };
        let mut points = Vec::with_capacity((target * scale) as usize + members.len());
        for m in members {
            let n = (density(m.weight) * scale).ceil().max(1.0) as u64;
            let base = hash_key(m.id.as_bytes());
            for i in 0..n {
                points.push((mix(base ^ mix(i)), m.slot));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    fn candidate(&self, h: u64, attempt: u32) -> Option<u32> {
        if self.points.is_empty() {
            return None;
        }
        let start = self.points.partition_point(|p| p.0 < h);
        let n = self.points.len();
        // Walk forward to the `attempt`-th distinct endpoint.
        let mut seen: Vec<u32> = Vec::new();
        for k in 0..n.min(4096) {
            let slot = self.points[(start + k) % n].1;
            if seen.contains(&slot) {
                continue;
            }
            if seen.len() as u32 == attempt {
                return Some(slot);
            }
            seen.push(slot);
        }
        None
    }
}

/// A Maglev lookup table of prime size `M`: each endpoint fills entries
/// along its own permutation `(offset + j · skip) mod M`, in turns weighted
/// by its weight, until the table is full.
#[derive(Debug)]
pub(crate) struct MaglevTable {
    table: Vec<u32>,
}

impl MaglevTable {
    pub(crate) fn build(members: &[Member<'_>], size: u64) -> MaglevTable {
        let m = size as usize;
        if members.is_empty() {
            return MaglevTable { table: Vec::new() };
        }
        struct Build {
            slot: u32,
            offset: u64,
            skip: u64,
            next: u64,
            weight: f64,
            target: f64,
        }
        let max_w = members.iter().map(|e| e.weight).max().unwrap_or(1).max(1);
        let mut entries: Vec<Build> = members
            .iter()
            .map(|e| {
                let h = hash_key(e.id.as_bytes());
                Build {
                    slot: e.slot,
                    offset: mix(h ^ 0x5851_f42d_4c95_7f2d) % size,
                    skip: mix(h ^ 0x1405_7b7e_f767_814f) % (size - 1) + 1,
                    next: 0,
                    weight: f64::from(e.weight) / f64::from(max_w),
                    target: 0.0,
                }
            })
            .collect();
        let mut table = vec![NONE; m];
        let mut filled = 0;
        let mut iteration: u64 = 0;
        while filled < m {
            for e in entries.iter_mut() {
                if filled == m {
                    break;
                }
                if (iteration as f64) * e.weight < e.target {
                    continue;
                }
                e.target += 1.0;
                let mut c = ((e.offset + e.next * e.skip) % size) as usize;
                while table[c] != NONE {
                    e.next += 1;
                    c = ((e.offset + e.next * e.skip) % size) as usize;
                }
                table[c] = e.slot;
                e.next += 1;
                filled += 1;
            }
            iteration += 1;
        }
        MaglevTable { table }
    }

    fn candidate(&self, h: u64, attempt: u32) -> Option<u32> {
        if self.table.is_empty() {
            return None;
        }
        let key = if attempt == 0 {
            h
        } else {
            mix(h ^ u64::from(attempt))
        };
        Some(self.table[(key % self.table.len() as u64) as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[String]) -> Vec<Member<'_>> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| Member {
                slot: i as u32,
                id,
                weight: 100,
            })
            .collect()
    }

    #[test]
    fn hash_is_stable() {
        // Pinned: clients built from other builds must agree.
        assert_eq!(hash_key(b""), mix(0xcbf2_9ce4_8422_2325));
        assert_eq!(hash_key(b"a"), hash_key(b"a"));
    }

    #[test]
    fn maglev_spreads_evenly() {
        let ids: Vec<String> = (0..10).map(|i| format!("10.0.0.{i}:80")).collect();
        let t = MaglevTable::build(&members(&ids), 65_537);
        let mut counts = [0usize; 10];
        for &s in &t.table {
            counts[s as usize] += 1;
        }
        for c in counts {
            assert!((6_400..=6_700).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn ring_walks_to_distinct_endpoints() {
        let ids: Vec<String> = (0..3).map(|i| format!("h{i}")).collect();
        let r = Ring::build(&members(&ids), 1024, 1 << 20);
        let a = r.candidate(12345, 0).unwrap();
        let b = r.candidate(12345, 1).unwrap();
        let c = r.candidate(12345, 2).unwrap();
        assert!(a != b && b != c && a != c);
        assert_eq!(r.candidate(12345, 3), None);
    }
}
