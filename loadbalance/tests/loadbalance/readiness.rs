//! Readiness: not-ready endpoints are skipped and count as unavailable;
//! readiness errors evict; discovery errors keep the set.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use futures::task::ArcWake;
use futures::FutureExt;
use http::Request;
use tower::{Service, ServiceExt};
use watertight_core::ext::Attempted;
use watertight_core::{BoxError, Change, Endpoint, Selected};
use watertight_loadbalance::{Builder, EndpointState, Event, ZoneAware};

use crate::support::*;

#[tokio::test(start_paused = true)]
async fn not_ready_endpoints_are_skipped_and_return_when_ready() {
    let cluster = Cluster::default();
    let a1 = cluster.get("a1");
    a1.set_ready(false);
    let mut lb: Lb = Builder::new()
        .seed(1)
        .build(fixed(endpoints(&[("a", 3)])), cluster.factory())
        .unwrap();
    let t = tally(&mut lb, 3_000).await;
    assert!(!t.contains_key("a1"));
    assert_eq!(a1.calls(), 0);
    assert_eq!(lb.handle().snapshot().count(EndpointState::NotReady), 1);
    a1.set_ready(true);
    let t = tally(&mut lb, 3_000).await;
    assert_near("a1 back", share(&t, "a1"), 1.0 / 3.0, 0.03);
    assert_eq!(lb.handle().snapshot().count(EndpointState::NotReady), 0);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_is_pending_until_an_endpoint_is_ready() {
    let cluster = Cluster::default();
    for id in ["a1", "a2"] {
        cluster.get(id).set_ready(false);
    }
    let mut lb: Lb = Builder::new()
        .seed(1)
        .build(fixed(endpoints(&[("a", 2)])), cluster.factory())
        .unwrap();
    assert!(lb.ready().now_or_never().is_none());
    let waiter = tokio::spawn(async move {
        let res = send(&mut lb, Request::new(())).await.unwrap();
        res.into_body()
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!waiter.is_finished());
    cluster.get("a2").set_ready(true);
    assert_eq!(waiter.await.unwrap(), "a2");
}

#[tokio::test(start_paused = true)]
async fn readiness_errors_evict_until_rediscovered() {
    let cluster = Cluster::default();
    let (tx, rx) = channel();
    tx.unbounded_send(Ok(Change::Reset(endpoints(&[("a", 3)]))))
        .unwrap();
    let events = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let seen = events.clone();
    let mut lb: Lb = Builder::new()
        .seed(1)
        .on_event(move |e| seen.lock().push(e.clone()))
        .build(rx, cluster.factory())
        .unwrap();
    cluster.get("a2").fail_readiness();
    let t = tally(&mut lb, 1_000).await;
    assert!(!t.contains_key("a2"));
    assert_eq!(lb.len(), 2);
    assert!(matches!(&events.lock()[..], [Event::Evicted(e)] if e.endpoint.as_str() == "a2"));
    // Discovery announces it again (its readiness recovered).
    cluster
        .get("a2")
        .0
        .ready_error
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let a2 = endpoints(&[("a", 3)]).remove(1);
    tx.unbounded_send(Ok(Change::Insert(a2))).unwrap();
    let t = tally(&mut lb, 3_000).await;
    assert_eq!(lb.len(), 3);
    assert!(t["a2"] > 500, "{t:?}");
}

#[tokio::test(start_paused = true)]
async fn discovery_errors_and_the_end_of_discovery_keep_the_set() {
    let cluster = Cluster::default();
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Change, BoxError>>();
    tx.unbounded_send(Ok(Change::Reset(endpoints(&[("a", 3)]))))
        .unwrap();
    let mut lb: Lb = Builder::new().seed(1).build(rx, cluster.factory()).unwrap();
    tally(&mut lb, 10).await;
    tx.unbounded_send(Err("registry down".into())).unwrap();
    assert_eq!(tally(&mut lb, 300).await.len(), 3);
    drop(tx);
    assert_eq!(tally(&mut lb, 300).await.len(), 3);
    assert_eq!(lb.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_discovery_changes_is_read_over_several_polls() {
    struct Wakes(AtomicUsize);
    impl ArcWake for Wakes {
        fn wake_by_ref(w: &Arc<Self>) {
            w.0.fetch_add(1, SeqCst);
        }
    }
    let cluster = Cluster::default();
    let (tx, rx) = channel();
    let zones: Vec<(String, usize)> = (0..6).map(|z| (format!("z{z}"), 250)).collect();
    let zones: Vec<(&str, usize)> = zones.iter().map(|(z, n)| (z.as_str(), *n)).collect();
    for e in endpoints(&zones) {
        tx.unbounded_send(Ok(Change::Insert(e))).unwrap();
    }
    let mut lb: Lb = Builder::new().seed(1).build(rx, cluster.factory()).unwrap();
    let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
    let waker = futures::task::waker(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(lb.poll_ready(&mut cx).is_ready());
    assert!(
        (1..1_500).contains(&lb.len()),
        "one poll reads part of the burst: {}",
        lb.len()
    );
    assert!(wakes.0.load(SeqCst) >= 1, "and wakes the task to read on");
    assert!(lb.poll_ready(&mut cx).is_ready());
    assert_eq!(lb.len(), 1_500);
}

/// A zone-aware balancer in zone `a` over three zones of three endpoints,
/// with one client in each zone: all traffic stays in `a`.
fn three_zones(cluster: &Cluster) -> Lb {
    Builder::new()
        .local_zone("a")
        .zone_aware(ZoneAware::default())
        .local_cluster(fixed(clients(&[("a", 1), ("b", 1), ("c", 1)])))
        .seed(2)
        .build(
            fixed(endpoints(&[("a", 3), ("b", 3), ("c", 3)])),
            cluster.factory(),
        )
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_zone_without_ready_endpoints_is_routed_around_and_back() {
    let cluster = Cluster::default();
    let mut lb = three_zones(&cluster);
    assert_eq!(zone_shares(&tally(&mut lb, 1_000).await)["a"], 1.0);
    // Zone a's breakers open (Backpressure): its endpoints stop being ready.
    for id in ["a1", "a2", "a3"] {
        cluster.get(id).set_ready(false);
    }
    let shares = zone_shares(&tally(&mut lb, 20_000).await);
    println!("zone a not ready: {shares:?}");
    assert!(
        shares.get("a").copied().unwrap_or(0.0) < 0.001,
        "{shares:?}"
    );
    assert_near("b", shares["b"], 0.5, 0.02);
    for id in ["a1", "a2", "a3"] {
        cluster.get(id).set_ready(true);
    }
    let shares = zone_shares(&tally(&mut lb, 1_000).await);
    assert!(shares["a"] > 0.99, "{shares:?}");
}

#[tokio::test(start_paused = true)]
async fn attempted_requests_go_to_untried_endpoints_and_record_the_pick() {
    let cluster = Cluster::default();
    let mut lb: Lb = Builder::new()
        .seed(4)
        .build(fixed(endpoints(&[("a", 3)])), cluster.factory())
        .unwrap();
    for _ in 0..200 {
        let attempted = Attempted::new();
        attempted.record("a1".into());
        attempted.record("a3".into());
        let mut req = Request::new(());
        req.extensions_mut().insert(attempted.clone());
        let res = send(&mut lb, req).await.unwrap();
        assert_eq!(res.body(), "a2");
        assert!(attempted.contains("a2"));
    }
    // Every endpoint tried: any endpoint will do.
    let attempted = Attempted::new();
    for id in ["a1", "a2", "a3"] {
        attempted.record(id.into());
    }
    let mut req = Request::new(());
    req.extensions_mut().insert(attempted);
    send(&mut lb, req).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn attempted_stays_within_the_locality_decision() {
    let cluster = Cluster::default();
    let mut lb = three_zones(&cluster);
    for round in 0..300 {
        let attempted = Attempted::new();
        attempted.record("a1".into());
        attempted.record("a2".into());
        if round % 2 == 0 {
            attempted.record("a3".into());
        }
        let mut req = Request::new(());
        req.extensions_mut().insert(attempted);
        let res = send(&mut lb, req).await.unwrap();
        if round % 2 == 0 {
            assert!(res.body().starts_with('a'), "{}", res.body());
        } else {
            assert_eq!(res.body(), "a3");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn requests_carry_the_selected_endpoint() {
    let ep = endpoints(&[("a", 1)]);
    let lb = Builder::new()
        .seed(1)
        .build(fixed(ep), |e: &Endpoint| {
            let id = e.id.clone();
            tower::service_fn(move |req: Request<()>| {
                let selected = req.extensions().get::<Selected>().cloned();
                let id = id.clone();
                async move {
                    let s = selected.expect("the balancer names the endpoint");
                    assert_eq!(s.id(), &id);
                    Ok::<_, Infallible>(s.locality().zone.clone())
                }
            })
        })
        .unwrap();
    let zone = lb.oneshot(Request::new(())).await.unwrap();
    assert_eq!(zone, "a");
}
