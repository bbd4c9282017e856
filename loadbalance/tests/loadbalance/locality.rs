//! The other locality policies: prefer-local, locality-weighted and
//! Ribbon's zone avoidance; and what the handle and metrics report.

use std::time::Duration;

use http::Request;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower::{Service, ServiceExt};
use watertight_core::Health;
use watertight_loadbalance::{Builder, EndpointState, LocalityPolicy, ZoneAvoidance, ZoneCounts};

use crate::support::*;

#[tokio::test(start_paused = true)]
async fn prefer_local_stays_local_while_the_zone_is_healthy_enough() {
    let cluster = Cluster::default();
    let mut eps = endpoints(&[("a", 3), ("b", 3), ("c", 3)]);
    eps[0] = with_health(eps[0].clone(), Health::Unhealthy);
    let mut lb: Lb = Builder::new()
        .local_zone("a")
        .seed(3)
        .build(fixed(eps), cluster.factory())
        .unwrap();
    let shares = zone_shares(&tally(&mut lb, 50_000).await);
    // min(1, 1.4 · 2/3) stays local; the rest splits by weight.
    let local = 1.4 * 2.0 / 3.0;
    println!("prefer local: {shares:?}");
    assert_near("a", shares["a"], local, 0.01);
    assert_near("b", shares["b"], (1.0 - local) / 2.0, 0.005);
    let all_local = Builder::new().local_zone("b").seed(3);
    let mut lb: Lb = all_local
        .build(fixed(endpoints(&[("a", 3), ("b", 3)])), cluster.factory())
        .unwrap();
    assert_eq!(zone_shares(&tally(&mut lb, 1_000).await)["b"], 1.0);
    assert_eq!(lb.handle().decisions().local, 1_000);
}

#[tokio::test(start_paused = true)]
async fn locality_weighted_follows_zone_weight_and_availability() {
    let cluster = Cluster::default();
    let mut eps = endpoints(&[("a", 1), ("b", 3), ("c", 3)]);
    eps[4] = with_health(eps[4].clone(), Health::Unhealthy);
    let mut lb: Lb = Builder::new()
        .locality(LocalityPolicy::LocalityWeighted)
        .seed(3)
        .build(fixed(eps), cluster.factory())
        .unwrap();
    let shares = zone_shares(&tally(&mut lb, 50_000).await);
    // Weights 100, 300, 300 · min(1, 1.4 · 2/3).
    let c = 300.0 * (1.4f64 * 2.0 / 3.0).min(1.0);
    let total = 100.0 + 300.0 + c;
    println!("locality weighted: {shares:?}");
    assert_near("a", shares["a"], 100.0 / total, 0.01);
    assert_near("c", shares["c"], c / total, 0.01);
}

#[tokio::test(start_paused = true)]
async fn zone_avoidance_drops_a_zone_whose_requests_pile_up() {
    let cluster = Cluster::default();
    for id in ["c1", "c2"] {
        cluster
            .get(id)
            .0
            .hang
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let mut avoidance = ZoneAvoidance::default();
    avoidance.trigger_load_per_server = 2.0;
    let mut lb: Lb = Builder::new()
        .locality(LocalityPolicy::ZoneAvoidance(avoidance))
        .no_outlier_detection()
        .seed(3)
        .build(
            fixed(endpoints(&[("a", 2), ("b", 2), ("c", 2)])),
            cluster.factory(),
        )
        .unwrap();
    // Requests to zone c never end; once it holds two per endpoint, the
    // next refresh drops it.
    let mut inflight = Vec::new();
    for _ in 0..60 {
        inflight.push(lb.ready().await.unwrap().call(Request::new(())));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c_calls = cluster.get("c1").calls() + cluster.get("c2").calls();
    let t = tally(&mut lb, 3_000).await;
    assert!(!t.contains_key("c1") && !t.contains_key("c2"), "{t:?}");
    assert!(c_calls >= 4);
    drop(inflight);
}

#[tokio::test(start_paused = true)]
async fn snapshot_counts_endpoints_per_zone_and_state() {
    let cluster = Cluster::default();
    let mut eps = endpoints(&[("a", 3), ("b", 2)]);
    eps[1] = with_health(eps[1].clone(), Health::Degraded);
    eps[2] = with_health(eps[2].clone(), Health::Unhealthy);
    cluster.get("b1").set_ready(false);
    let mut lb: Lb = Builder::new()
        .seed(3)
        .build(fixed(eps), cluster.factory())
        .unwrap();
    tally(&mut lb, 200).await;
    lb.handle().eject("b2");
    tally(&mut lb, 10).await;
    let snap = lb.handle().snapshot();
    assert_eq!(snap.endpoints, 5);
    let a = snap.zones["a"];
    assert_eq!((a.healthy, a.degraded, a.unhealthy), (1, 1, 1));
    let b: ZoneCounts = snap.zones["b"];
    assert_eq!((b.healthy, b.not_ready, b.ejected), (0, 1, 1));
    assert_eq!(snap.count(EndpointState::Ejected), 1);
    let statuses = lb.handle().endpoints();
    assert_eq!(statuses.len(), 5);
    let b1 = statuses
        .iter()
        .find(|s| s.endpoint.id.as_str() == "b1")
        .unwrap();
    assert_eq!(b1.state, EndpointState::NotReady);
    assert_eq!(snap.decisions.total(), 210);
}

#[test]
fn metrics_report_decisions_endpoints_and_ejections() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let cluster = Cluster::default();
            cluster.get("a1").set_status(503);
            let mut lb: Lb = Builder::new()
                .name("metered")
                .local_zone("a")
                .round_robin()
                .classify(watertight_core::classify::ServerErrorsAsFailures)
                .seed(3)
                .build(fixed(endpoints(&[("a", 3), ("b", 3)])), cluster.factory())
                .unwrap();
            tally(&mut lb, 100).await;
        });
    });
    type Labels = Vec<(String, String)>;
    let values: Vec<(String, Labels, DebugValue)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, v)| {
            let labels = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            (key.key().name().to_owned(), labels, v)
        })
        .collect();
    let find = |name: &str, want: &[(&str, &str)]| -> f64 {
        values
            .iter()
            .find(|(n, labels, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| match v {
                DebugValue::Counter(c) => *c as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(_) => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name} {want:?} in {values:#?}"))
    };
    // Prefer-local: all local until a1's ejection leaves zone a at
    // min(1, 1.4 · 2/3) of its capacity.
    let local = find(
        "watertight_loadbalance_decisions_total",
        &[("name", "metered"), ("decision", "local")],
    );
    let cross = find(
        "watertight_loadbalance_decisions_total",
        &[("name", "metered"), ("decision", "cross_zone")],
    );
    assert_eq!(local + cross, 100.0);
    assert!(local >= 90.0 && cross >= 1.0, "{local} {cross}");
    assert_eq!(
        find(
            "watertight_loadbalance_endpoints",
            &[("zone", "a"), ("state", "ejected")]
        ),
        1.0
    );
    assert_eq!(
        find(
            "watertight_loadbalance_endpoints",
            &[("zone", "b"), ("state", "healthy")]
        ),
        3.0
    );
    assert_eq!(
        find(
            "watertight_loadbalance_ejections_total",
            &[("detection", "consecutive_5xx"), ("action", "ejected")]
        ),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn least_requests_avoids_an_endpoint_that_holds_requests() {
    let cluster = Cluster::default();
    cluster
        .get("a1")
        .0
        .hang
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut lb: Lb = Builder::new()
        .least_requests()
        .seed(3)
        .build(fixed(endpoints(&[("a", 4)])), cluster.factory())
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..2_000 {
        let fut = lb.ready().await.unwrap().call(Request::new(()));
        held.push(tokio::spawn(fut));
        tokio::task::yield_now().await;
    }
    // Each request a1 holds makes it lose one more comparison: it takes a
    // handful, never its quarter.
    let a1 = cluster.get("a1").calls();
    assert!(a1 < 20, "{a1}");
    for h in held {
        h.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn a_layer_builds_balancers_over_discovery_streams() {
    use tower::Layer;
    let cluster = Cluster::default();
    let layer = Builder::new()
        .round_robin()
        .seed(3)
        .layer(cluster.factory())
        .unwrap();
    let mut first: Lb = layer.layer(fixed(endpoints(&[("a", 2)])));
    let mut second: Lb = layer.clone().layer(fixed(endpoints(&[("b", 3)])));
    assert_eq!(tally(&mut first, 100).await.len(), 2);
    assert_eq!(tally(&mut second, 100).await.len(), 3);
    let err = Builder::new()
        .local_zone("a")
        .local_cluster(fixed(clients(&[("a", 1), ("b", 1)])))
        .layer::<_, Req>(cluster.factory())
        .unwrap_err();
    assert_eq!(err.field(), "local_cluster");
}
