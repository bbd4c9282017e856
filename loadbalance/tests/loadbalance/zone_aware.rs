//! Envoy zone-aware routing's worked cases (DESIGN §8.1), each share
//! computed by hand from §8.1 and measured over 100,000 picks.

use std::collections::BTreeMap;

use watertight_core::Change;
use watertight_loadbalance::{Builder, ZoneAware, ZoneRouting, ZoneRoutingOff};

use crate::support::*;

const PICKS: usize = 100_000;
const ZONES: [&str; 3] = ["a", "b", "c"];

/// §8.1 written out independently: the share of requests a client in zone
/// `a` sends to each zone, given healthy upstream and local-cluster counts
/// per zone (a, b, c) and equal weights.
fn expected_shares(upstream: [u32; 3], local: [u32; 3], min_cluster_size: u32) -> [f64; 3] {
    let up_all: u32 = upstream.iter().sum();
    let local_all: u32 = local.iter().sum();
    let every_endpoint = upstream.map(|c| f64::from(c) / f64::from(up_all));
    let localities = |v: &[u32; 3]| v.iter().filter(|&&c| c > 0).count();
    if localities(&upstream) < 2
        || localities(&local) < 2
        || local[0] == 0
        || up_all < min_cluster_size
    {
        return every_endpoint;
    }
    let pct = |c: u32, all: u32| 10_000 * u64::from(c) / u64::from(all);
    let up = upstream.map(|c| pct(c, up_all));
    let lo = local.map(|c| pct(c, local_all));
    if up[0] >= lo[0] {
        return [1.0, 0.0, 0.0];
    }
    let local_share = (up[0] * 10_000 / lo[0]) as f64 / 10_000.0;
    let residual = [0, up[1].saturating_sub(lo[1]), up[2].saturating_sub(lo[2])];
    let total: u64 = residual.iter().sum();
    [
        local_share,
        (1.0 - local_share) * residual[1] as f64 / total as f64,
        (1.0 - local_share) * residual[2] as f64 / total as f64,
    ]
}

fn zones(counts: [u32; 3]) -> Vec<(&'static str, usize)> {
    ZONES
        .iter()
        .zip(counts)
        .map(|(z, n)| (*z, n as usize))
        .collect()
}

async fn balancer(upstream: [u32; 3], local: [u32; 3]) -> Lb {
    let cluster = Cluster::default();
    Builder::new()
        .name("zone_aware")
        .local_zone("a")
        .zone_aware(ZoneAware::default())
        .local_cluster(fixed(clients(&zones(local))))
        .seed(7)
        .build(fixed(endpoints(&zones(upstream))), cluster.factory())
        .unwrap()
}

async fn check(case: &str, upstream: [u32; 3], local: [u32; 3]) -> (Lb, BTreeMap<String, f64>) {
    let mut lb = balancer(upstream, local).await;
    let shares = zone_shares(&tally(&mut lb, PICKS).await);
    let want = expected_shares(upstream, local, 6);
    println!(
        "{case}: upstream {upstream:?} local {local:?}: measured {shares:?}, expected {want:?}"
    );
    for (zone, want) in ZONES.iter().zip(want) {
        let got = shares.get(*zone).copied().unwrap_or(0.0);
        assert_near(&format!("{case} zone {zone}"), got, want, 0.01);
    }
    (lb, shares)
}

#[tokio::test(start_paused = true)]
async fn zone_aware_equal_spread_routes_everything_local() {
    let (lb, shares) = check("equal", [3, 3, 3], [1, 1, 1]).await;
    assert_eq!(shares["a"], 1.0);
    let h = lb.handle();
    assert_eq!(h.snapshot().zone_routing, ZoneRouting::Local);
    assert_eq!(h.decisions().local, PICKS as u64);
}

#[tokio::test(start_paused = true)]
async fn zone_aware_1_4_4_keeps_a_third_local_and_splits_the_rest() {
    let (lb, _) = check("1-4-4", [1, 4, 4], [1, 1, 1]).await;
    let d = lb.handle().decisions();
    assert_near("sampled", d.sampled as f64 / PICKS as f64, 1.0 / 3.0, 0.01);
    assert_near(
        "cross_zone",
        d.cross_zone as f64 / PICKS as f64,
        2.0 / 3.0,
        0.01,
    );
    match lb.handle().snapshot().zone_routing {
        ZoneRouting::Sampled { local_share } => {
            assert_near("local_share", local_share, 0.3333, 1e-9)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn zone_aware_local_zone_without_upstream_spills_evenly() {
    let (_, shares) = check("no-local-upstream", [0, 3, 3], [1, 1, 1]).await;
    assert!(!shares.contains_key("a"));
}

#[tokio::test(start_paused = true)]
async fn zone_aware_below_min_cluster_size_balances_over_every_endpoint() {
    let (lb, _) = check("below-min-cluster-size", [1, 1, 1], [1, 1, 1]).await;
    let h = lb.handle();
    assert_eq!(
        h.snapshot().zone_routing,
        ZoneRouting::Off(ZoneRoutingOff::ClusterTooSmall)
    );
    assert_eq!(h.decisions().any, PICKS as u64);
}

#[tokio::test(start_paused = true)]
async fn zone_aware_more_local_clients_than_capacity_samples_by_residual() {
    check("2-1-1 clients", [3, 3, 3], [2, 1, 1]).await;
}

#[tokio::test(start_paused = true)]
async fn zone_aware_uneven_upstream_with_spare_local_capacity_stays_local() {
    check("4-1-1", [4, 1, 1], [1, 1, 1]).await;
}

#[tokio::test(start_paused = true)]
async fn zone_aware_follows_the_local_cluster_as_it_changes() {
    let (tx, rx) = channel();
    let cluster = Cluster::default();
    let mut lb: Lb = Builder::new()
        .local_zone("a")
        .zone_aware(ZoneAware::default())
        .local_cluster(rx)
        .seed(3)
        .build(fixed(endpoints(&zones([3, 3, 3]))), cluster.factory())
        .unwrap();
    tx.unbounded_send(Ok(Change::Reset(clients(&zones([1, 1, 1])))))
        .unwrap();
    assert_eq!(zone_shares(&tally(&mut lb, 1_000).await)["a"], 1.0);
    // Two more clients join zone a: a now holds 60% of the clients but a
    // third of the capacity, so 5/9 of its requests stay local.
    for c in clients(&zones([3, 1, 1])) {
        tx.unbounded_send(Ok(Change::Insert(c))).unwrap();
    }
    let shares = zone_shares(&tally(&mut lb, 30_000).await);
    let want = expected_shares([3, 3, 3], [3, 1, 1], 6);
    assert_near("a after join", shares["a"], want[0], 0.015);
    assert_near("b after join", shares["b"], want[1], 0.015);
}
