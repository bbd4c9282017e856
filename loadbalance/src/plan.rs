//! The routing arithmetic, recomputed on membership and health changes,
//! never per request: Envoy's priority loads and panic, Envoy's zone-aware
//! routing, locality weights, and Ribbon's zone avoidance. Pure functions
//! of endpoint counts, so they are tested against the worked examples
//! directly.

use crate::handle::ZoneRoutingOff;

/// Envoy's zone-routing percentages are in units of 1/10000.
pub(crate) const BASIS: u64 = 10_000;

/// Endpoint counts of one priority level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LevelCounts {
    pub(crate) total: u32,
    pub(crate) healthy: u32,
    pub(crate) degraded: u32,
}

/// Healthy or degraded endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Tier {
    Healthy = 0,
    Degraded = 1,
}

/// Percent of requests per priority level (Envoy's healthy and degraded
/// priority loads; together they add up to 100 unless there is no endpoint)
/// and the levels in panic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PriorityLoads {
    pub(crate) healthy: Vec<u32>,
    pub(crate) degraded: Vec<u32>,
    pub(crate) panic: Vec<bool>,
    pub(crate) total_panic: bool,
}

fn distribute(
    loads: &mut [u32],
    avail: &[u32],
    mut total: u32,
    normalized: u32,
) -> (Option<usize>, u32) {
    let mut first = None;
    for (i, &a) in avail.iter().enumerate() {
        if a > 0 && first.is_none() {
            first = Some(i);
        }
        loads[i] = total.min(a * 100 / normalized);
        total -= loads[i];
    }
    (first, total)
}

fn in_panic(level: &LevelCounts, threshold: f64) -> bool {
    if level.total == 0 {
        return threshold > 0.0;
    }
    let pct = 100.0 * f64::from(level.healthy + level.degraded) / f64::from(level.total);
    pct < threshold
}

/// Envoy's `recalculatePerPriorityState` and `recalculatePerPriorityPanic`:
/// a level's health is `min(100, overprovisioning · healthy / total)` (and
/// likewise for degraded endpoints); load goes to the levels in order, each
/// taking its health's share of the normalized total availability; no
/// level is in panic while the total availability is 100; when every level
/// is, load follows endpoint counts.
///
/// `overprovisioning` is in percent (140 for 1.4), `panic_threshold` in
/// percent.
pub(crate) fn priority_loads(
    levels: &[LevelCounts],
    overprovisioning: u64,
    panic_threshold: f64,
) -> PriorityLoads {
    let n = levels.len();
    let mut health = vec![0u32; n];
    let mut degraded = vec![0u32; n];
    for (i, l) in levels.iter().enumerate() {
        if l.total > 0 {
            health[i] =
                (overprovisioning * u64::from(l.healthy) / u64::from(l.total)).min(100) as u32;
            degraded[i] =
                (overprovisioning * u64::from(l.degraded) / u64::from(l.total)).min(100) as u32;
        }
    }
    let normalized = health.iter().chain(&degraded).sum::<u32>().min(100);
    let mut out = PriorityLoads {
        healthy: vec![0; n],
        degraded: vec![0; n],
        panic: vec![false; n],
        total_panic: false,
    };
    if normalized > 0 {
        let (first_h, rest) = distribute(&mut out.healthy, &health, 100, normalized);
        let (first_d, rest) = distribute(&mut out.degraded, &degraded, rest, normalized);
        if rest != 0 {
            if let Some(f) = first_h {
                out.healthy[f] += rest;
            } else if let Some(f) = first_d {
                out.degraded[f] += rest;
            }
        }
    } else if panic_threshold == 0.0 && n > 0 {
        out.healthy[0] = 100;
    }
    let mut total_panic = n > 0;
    for (i, l) in levels.iter().enumerate() {
        out.panic[i] = normalized != 100 && in_panic(l, panic_threshold);
        total_panic &= out.panic[i];
    }
    if total_panic {
        let hosts: u32 = levels.iter().map(|l| l.total).sum();
        let mut rest = 100;
        for (i, l) in levels.iter().enumerate() {
            out.healthy[i] = (100 * l.total).checked_div(hosts).unwrap_or(0);
            out.degraded[i] = 0;
            rest -= out.healthy[i];
        }
        if let Some(first) = levels.iter().position(|l| l.total > 0) {
            out.healthy[first] += rest;
        }
    }
    out.total_panic = total_panic;
    out
}

impl PriorityLoads {
    /// The level and tier a draw `r` in `0..100` lands on.
    pub(crate) fn choose(&self, r: u32) -> Option<(usize, Tier)> {
        let mut acc = 0;
        for (i, &l) in self.healthy.iter().enumerate() {
            acc += l;
            if r < acc {
                return Some((i, Tier::Healthy));
            }
        }
        for (i, &l) in self.degraded.iter().enumerate() {
            acc += l;
            if r < acc {
                return Some((i, Tier::Degraded));
            }
        }
        None
    }
}

/// Envoy's zone-aware routing state of priority 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ZoneRoute {
    /// No zone routing: all healthy endpoints.
    Off(ZoneRoutingOff),
    /// Everything to the local zone.
    Direct { local: u32 },
    /// The local zone with probability `local_bp / 10000`, the rest across
    /// zones in proportion to their residual capacity (cumulative), or
    /// uniformly over `uniform` when no zone has any left.
    Residual {
        local: u32,
        local_bp: u64,
        residual: Vec<(u64, u32)>,
        uniform: Vec<u32>,
    },
}

/// The counts zone-aware routing reads, indexed by locality.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ZoneInputs<'a> {
    /// Priority-0 endpoints per locality, and the healthy ones.
    pub(crate) upstream_total: &'a [u32],
    pub(crate) upstream_healthy: &'a [u32],
    /// Local-cluster members per locality, and the healthy ones.
    pub(crate) local_total: &'a [u32],
    pub(crate) local_healthy: &'a [u32],
    pub(crate) local: u32,
    pub(crate) min_cluster_size: u32,
    pub(crate) panic_threshold: f64,
}

fn at(v: &[u32], i: usize) -> u32 {
    v.get(i).copied().unwrap_or(0)
}

/// Envoy's `regenerateLocalityRoutingStructures` with its early exits (DESIGN
/// §8.1).
pub(crate) fn zone_route(z: &ZoneInputs<'_>) -> ZoneRoute {
    let n = z
        .upstream_total
        .len()
        .max(z.local_total.len())
        .max(z.local as usize + 1);
    let local = z.local as usize;
    if (0..n).filter(|&i| at(z.upstream_total, i) > 0).count() < 2 {
        return ZoneRoute::Off(ZoneRoutingOff::TooFewUpstreamLocalities);
    }
    if (0..n).filter(|&i| at(z.local_total, i) > 0).count() < 2 {
        return ZoneRoute::Off(ZoneRoutingOff::TooFewLocalLocalities);
    }
    if at(z.local_total, local) == 0 {
        return ZoneRoute::Off(ZoneRoutingOff::NoLocalHosts);
    }
    let local_all: u32 = z.local_total.iter().sum();
    let local_healthy_all: u32 = z.local_healthy.iter().sum();
    if 100.0 * f64::from(local_healthy_all) / f64::from(local_all) < z.panic_threshold {
        return ZoneRoute::Off(ZoneRoutingOff::LocalClusterInPanic);
    }
    let upstream_healthy_all: u32 = z.upstream_healthy.iter().sum();
    if upstream_healthy_all < z.min_cluster_size || upstream_healthy_all == 0 {
        return ZoneRoute::Off(ZoneRoutingOff::ClusterTooSmall);
    }
    let pct = |count: u32, all: u32| BASIS * u64::from(count) / u64::from(all);
    let local_pct = |i: usize| pct(at(z.local_healthy, i), local_healthy_all);
    let upstream_pct = |i: usize| pct(at(z.upstream_healthy, i), upstream_healthy_all);
    if local_pct(local) == 0 {
        return ZoneRoute::Off(ZoneRoutingOff::NoLocalHosts);
    }
    if upstream_pct(local) >= local_pct(local) {
        return ZoneRoute::Direct { local: z.local };
    }
    let local_bp = upstream_pct(local) * BASIS / local_pct(local);
    let mut residual = Vec::new();
    let mut acc = 0;
    let mut uniform = Vec::new();
    for i in (0..n).filter(|&i| i != local) {
        if at(z.upstream_healthy, i) > 0 {
            uniform.push(i as u32);
        }
        let (u, l) = (upstream_pct(i), local_pct(i));
        if u > l {
            acc += u - l;
            residual.push((acc, i as u32));
        }
    }
    ZoneRoute::Residual {
        local: z.local,
        local_bp,
        residual,
        uniform,
    }
}

/// Cumulative locality weights `weight · min(1, overprovisioning · available
/// / total)` (Envoy's locality-weighted balancing), skipping `skip`.
pub(crate) fn locality_weights(
    weights: &[f64],
    totals: &[u32],
    available: &[u32],
    overprovisioning: f64,
    skip: Option<usize>,
) -> Vec<(f64, u32)> {
    let mut acc = 0.0;
    let mut out = Vec::new();
    for (i, &w) in weights.iter().enumerate() {
        if Some(i) == skip || at(totals, i) == 0 || at(available, i) == 0 {
            continue;
        }
        let share =
            (overprovisioning * f64::from(at(available, i)) / f64::from(at(totals, i))).min(1.0);
        acc += w * share;
        out.push((acc, i as u32));
    }
    out
}

/// Netflix Ribbon's `ZoneAvoidanceRule.getAvailableZones`: zones whose
/// share of unavailable endpoints reaches `blackout` are dropped, and, if
/// some zone's active requests per available endpoint reach `trigger`, one
/// of the worst zones (chosen by `pick_worst` among them) too; at least one
/// zone stays. Returns the cumulative endpoint counts of the zones left
/// (Ribbon picks a zone in proportion to its instances).
pub(crate) fn available_zones(
    instances: &[u32],
    available: &[u32],
    active: &[u64],
    trigger: f64,
    blackout: f64,
    pick_worst: impl FnOnce(&[usize]) -> usize,
) -> Vec<(u64, u32)> {
    let mut zones: Vec<usize> = Vec::new();
    let mut worst: Vec<usize> = Vec::new();
    let mut max_load = 0.0f64;
    for (i, &count) in instances.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let up = at(available, i);
        let tripped = count - up.min(count);
        if f64::from(tripped) / f64::from(count) >= blackout || up == 0 {
            continue;
        }
        let load = active.get(i).copied().unwrap_or(0) as f64 / f64::from(up);
        if (load - max_load).abs() < 1e-6 {
            worst.push(i);
        } else if load > max_load {
            max_load = load;
            worst.clear();
            worst.push(i);
        }
        zones.push(i);
    }
    if max_load >= trigger && zones.len() > 1 && !worst.is_empty() {
        let avoid = worst[pick_worst(&worst).min(worst.len() - 1)];
        zones.retain(|&z| z != avoid);
    }
    let mut acc = 0;
    zones
        .into_iter()
        .map(|z| {
            acc += u64::from(instances[z]);
            (acc, z as u32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(total: u32, healthy: u32, degraded: u32) -> LevelCounts {
        LevelCounts {
            total,
            healthy,
            degraded,
        }
    }

    #[test]
    fn all_healthy_priority_zero_takes_everything() {
        let l = priority_loads(&[level(10, 10, 0), level(10, 10, 0)], 140, 50.0);
        assert_eq!(l.healthy, [100, 0]);
        assert!(!l.total_panic && l.panic == [false, false]);
    }

    #[test]
    fn load_spills_as_health_drops() {
        // 60% healthy: health min(100, 1.4 · 60) = 84.
        let l = priority_loads(&[level(10, 6, 0), level(10, 10, 0)], 140, 50.0);
        assert_eq!(l.healthy, [84, 16]);
        // Envoy's comment example: health 10 / 20 / 10 and degraded
        // 20 / 10 / 0 give 16 / 28 / 14 healthy and 28 / 14 / 0 degraded
        // (factor 1.0 so counts are health; panic off to see the loads).
        let l = priority_loads(
            &[level(100, 10, 20), level(100, 20, 10), level(100, 10, 0)],
            100,
            0.0,
        );
        assert_eq!(l.healthy, [16, 28, 14]);
        assert_eq!(l.degraded, [28, 14, 0]);
    }

    #[test]
    fn total_panic_follows_endpoint_counts() {
        let l = priority_loads(&[level(10, 3, 0), level(30, 6, 0)], 140, 50.0);
        assert!(l.total_panic);
        assert_eq!(l.healthy, [25, 75]);
        // No panic while total availability is 100, whatever one level has.
        let l = priority_loads(&[level(10, 3, 0), level(10, 10, 0)], 140, 50.0);
        assert!(!l.total_panic && l.panic == [false, false]);
        assert_eq!(l.healthy, [42, 58]);
    }

    fn zi<'a>(up: &'a [u32], local: &'a [u32], min: u32) -> ZoneInputs<'a> {
        ZoneInputs {
            upstream_total: up,
            upstream_healthy: up,
            local_total: local,
            local_healthy: local,
            local: 0,
            min_cluster_size: min,
            panic_threshold: 50.0,
        }
    }

    #[test]
    fn zone_routing_worked_cases() {
        assert_eq!(
            zone_route(&zi(&[3, 3, 3], &[1, 1, 1], 6)),
            ZoneRoute::Direct { local: 0 }
        );
        assert_eq!(
            zone_route(&zi(&[1, 4, 4], &[1, 1, 1], 6)),
            ZoneRoute::Residual {
                local: 0,
                local_bp: 3333,
                residual: vec![(1111, 1), (2222, 2)],
                uniform: vec![1, 2],
            }
        );
        assert_eq!(
            zone_route(&zi(&[1, 1, 1], &[1, 1, 1], 6)),
            ZoneRoute::Off(ZoneRoutingOff::ClusterTooSmall)
        );
        assert_eq!(
            zone_route(&zi(&[0, 3, 3], &[1, 1, 1], 6)),
            ZoneRoute::Residual {
                local: 0,
                local_bp: 0,
                residual: vec![(1667, 1), (3334, 2)],
                uniform: vec![1, 2],
            }
        );
        assert_eq!(
            zone_route(&zi(&[3, 3, 3], &[1], 6)),
            ZoneRoute::Off(ZoneRoutingOff::TooFewLocalLocalities)
        );
        assert_eq!(
            zone_route(&zi(&[3, 3, 3], &[0, 1, 1], 6)),
            ZoneRoute::Off(ZoneRoutingOff::NoLocalHosts)
        );
        assert_eq!(
            zone_route(&zi(&[9], &[1, 1, 1], 6)),
            ZoneRoute::Off(ZoneRoutingOff::TooFewUpstreamLocalities)
        );
    }

    #[test]
    fn ribbon_drops_blacked_out_and_worst_zones() {
        // Zone 1 is blacked out; zone 2 carries the highest load per server.
        let z = available_zones(&[3, 3, 3], &[3, 0, 3], &[1, 0, 9], 0.2, 0.99999, |w| {
            assert_eq!(w, [2]);
            0
        });
        assert_eq!(z, [(3, 0)]);
        // Below the trigger nothing is dropped.
        let z = available_zones(&[3, 3], &[3, 3], &[0, 0], 0.2, 0.99999, |_| 0);
        assert_eq!(z, [(3, 0), (6, 1)]);
    }
}
