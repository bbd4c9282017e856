//! Weights, priorities, panic and subsets.

use http::header::HeaderName;
use http::Request;
use watertight_core::{is_caused_by, Endpoint, Health};
use watertight_loadbalance::error::NoHealthyEndpoints;
use watertight_loadbalance::{Builder, Subsets};

use crate::support::*;

const PICKS: usize = 100_000;

#[tokio::test(start_paused = true)]
async fn weights_198_1_1_receive_99_and_half_and_half() {
    let cluster = Cluster::default();
    let eps: Vec<Endpoint> = endpoints(&[("a", 3)])
        .into_iter()
        .zip([198, 1, 1])
        .map(|(e, w)| e.with_weight(w))
        .collect();
    let mut lb: Lb = Builder::new()
        .seed(5)
        .build(fixed(eps), cluster.factory())
        .unwrap();
    let t = tally(&mut lb, PICKS).await;
    println!("weights 198/1/1: {t:?}");
    assert_near("a1", share(&t, "a1"), 0.99, 0.003);
    assert_near("a2", share(&t, "a2"), 0.005, 0.003);
    assert_near("a3", share(&t, "a3"), 0.005, 0.003);
}

fn canary_endpoints() -> Vec<Endpoint> {
    // Eight stable endpoints (`s…`) and two canaries (`k…`).
    endpoints(&[("s", 8), ("k", 2)])
        .into_iter()
        .map(|e| {
            let v = if e.id.as_str().starts_with('k') {
                "v2"
            } else {
                "v1"
            };
            e.with_label("version", v)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn canary_subset_receives_five_percent() {
    let cluster = Cluster::default();
    let mut lb: Lb = Builder::new()
        .subsets(Subsets::new("version").share("v2", 0.05))
        .seed(9)
        .build(fixed(canary_endpoints()), cluster.factory())
        .unwrap();
    let shares = zone_shares(&tally(&mut lb, PICKS).await);
    println!("canary: {shares:?}");
    assert_near("canary", shares["k"], 0.05, 0.005);
}

#[tokio::test(start_paused = true)]
async fn header_override_always_hits_the_canary() {
    let cluster = Cluster::default();
    let mut lb: Lb = Builder::new()
        .subsets(Subsets::new("version").share("v2", 0.05))
        .seed(9)
        .build(fixed(canary_endpoints()), cluster.factory())
        .unwrap()
        .with_subset_override(watertight_loadbalance::http::subset_header(
            HeaderName::from_static("x-version"),
        ));
    for _ in 0..2_000 {
        let req = Request::builder()
            .header("x-version", "v2")
            .body(())
            .unwrap();
        let res = send(&mut lb, req).await.unwrap();
        assert!(res.body().starts_with('k'), "{}", res.body());
    }
    // Without the header, the shares hold.
    let shares = zone_shares(&tally(&mut lb, 20_000).await);
    assert_near("canary without header", shares["k"], 0.05, 0.01);
}

#[tokio::test(start_paused = true)]
async fn canary_without_endpoints_falls_back_to_the_default_subset() {
    let cluster = Cluster::default();
    let stable: Vec<Endpoint> = canary_endpoints()
        .into_iter()
        .filter(|e| e.id.as_str().starts_with('s'))
        .collect();
    let mut lb: Lb = Builder::new()
        .subsets(Subsets::new("version").share("v2", 0.5))
        .seed(9)
        .build(fixed(stable), cluster.factory())
        .unwrap();
    let t = tally(&mut lb, 1_000).await;
    assert_eq!(t.values().sum::<usize>(), 1_000);
}

/// Envoy's priority arithmetic written out: the share of requests each
/// level (and tier) gets, from (total, healthy, degraded) per level.
fn expected_levels(levels: &[(u32, u32, u32)]) -> (Vec<f64>, Vec<f64>, bool) {
    let health: Vec<u32> = levels
        .iter()
        .map(|&(t, h, _)| (140 * h / t).min(100))
        .collect();
    let degraded: Vec<u32> = levels
        .iter()
        .map(|&(t, _, d)| (140 * d / t).min(100))
        .collect();
    let total: u32 = (health.iter().sum::<u32>() + degraded.iter().sum::<u32>()).min(100);
    let panic = total < 100
        && levels
            .iter()
            .all(|&(t, h, d)| 100.0 * f64::from(h + d) / f64::from(t) < 50.0);
    if panic {
        let hosts: u32 = levels.iter().map(|l| l.0).sum();
        let shares = levels
            .iter()
            .map(|l| f64::from(l.0) / f64::from(hosts))
            .collect();
        return (shares, vec![0.0; levels.len()], true);
    }
    let mut left = 100;
    let mut h = Vec::new();
    for x in &health {
        let l = (x * 100 / total).min(left);
        left -= l;
        h.push(l);
    }
    let mut d = Vec::new();
    for x in &degraded {
        let l = (x * 100 / total).min(left);
        left -= l;
        d.push(l);
    }
    h[0] += left;
    (
        h.iter().map(|&x| f64::from(x) / 100.0).collect(),
        d.iter().map(|&x| f64::from(x) / 100.0).collect(),
        false,
    )
}

/// Level 0 endpoints are `p…`, level 1 `q…`; the first `healthy` of each
/// are healthy, the next `degraded` degraded, the rest unhealthy.
fn levels(spec: &[(u32, u32, u32)]) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for (p, &(total, healthy, degraded)) in spec.iter().enumerate() {
        let zone = ["p", "q"][p];
        for (i, e) in endpoints(&[(zone, total as usize)]).into_iter().enumerate() {
            let i = i as u32;
            let health = if i < healthy {
                Health::Healthy
            } else if i < healthy + degraded {
                Health::Degraded
            } else {
                Health::Unhealthy
            };
            out.push(with_health(e.with_priority(p as u8), health));
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn priority_spill_and_panic_follow_envoy_for_three_health_levels() {
    for (case, spec) in [
        ("all healthy", vec![(10, 10, 0), (10, 10, 0)]),
        ("p0 at 60%", vec![(10, 6, 0), (10, 10, 0)]),
        ("p0 half degraded", vec![(10, 5, 5), (10, 10, 0)]),
        ("both below panic", vec![(10, 3, 0), (10, 2, 0)]),
    ] {
        let cluster = Cluster::default();
        let mut lb: Lb = Builder::new()
            .seed(13)
            .build(fixed(levels(&spec)), cluster.factory())
            .unwrap();
        let t = tally(&mut lb, PICKS).await;
        let shares = zone_shares(&t);
        let (healthy, degraded, panic) = expected_levels(&spec);
        println!("{case}: measured {shares:?}; expected healthy {healthy:?} degraded {degraded:?} panic {panic}");
        for (p, zone) in ["p", "q"].iter().enumerate() {
            let want = healthy[p] + degraded[p];
            assert_near(
                &format!("{case} level {p}"),
                shares.get(*zone).copied().unwrap_or(0.0),
                want,
                0.01,
            );
        }
        // Which endpoints served: in panic every one of the level, else
        // only those of the tier the load went to.
        let (total, h, d) = spec[0];
        for i in 0..total {
            let id = format!("p{}", i + 1);
            let got = share(&t, &id);
            let want = if panic {
                healthy[0] / f64::from(total)
            } else if i < h {
                healthy[0] / f64::from(h)
            } else if i < h + d {
                degraded[0] / f64::from(d)
            } else {
                0.0
            };
            assert_near(&format!("{case} {id}"), got, want, 0.006);
        }
        if panic {
            assert_eq!(lb.handle().decisions().panic, PICKS as u64);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn fail_traffic_on_panic_fails_instead_of_using_unhealthy_endpoints() {
    let cluster = Cluster::default();
    let mut lb: Lb = Builder::new()
        .fail_traffic_on_panic(true)
        .seed(13)
        .build(fixed(levels(&[(10, 3, 0)])), cluster.factory())
        .unwrap();
    let err = send(&mut lb, Request::new(())).await.unwrap_err();
    assert!(is_caused_by::<NoHealthyEndpoints>(&*err), "{err}");
}
