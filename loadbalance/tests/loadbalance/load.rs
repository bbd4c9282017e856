//! P2C over PeakEWMA under gray failure, failure penalties, and slow start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use parking_lot::Mutex;
use tokio::time::{advance, sleep};
use tower::{Service, ServiceExt};
use watertight_core::classify::ServerErrorsAsFailures;
use watertight_core::Change;
use watertight_loadbalance::{Builder, SlowStart};

use crate::support::*;

/// Open-loop arrivals every `gap` for `n` requests; counts where each went.
async fn open_loop(lb: &mut Lb, n: usize, gap: Duration) -> BTreeMap<String, usize> {
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let mut tasks = Vec::new();
    for _ in 0..n {
        sleep(gap).await;
        let fut = lb.ready().await.unwrap().call(Request::new(()));
        let counts = counts.clone();
        tasks.push(tokio::spawn(async move {
            let res = fut.await.unwrap();
            *counts.lock().entry(res.into_body()).or_insert(0) += 1;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let out = counts.lock().clone();
    out
}

#[tokio::test(start_paused = true)]
async fn p2c_peak_ewma_sends_a_gray_endpoint_under_five_percent() {
    let cluster = Cluster::default();
    for i in 1..=10 {
        cluster
            .get(&format!("a{i}"))
            .set_latency(Duration::from_millis(10));
    }
    // One endpoint answers, but twenty times slower.
    cluster.get("a10").set_latency(Duration::from_millis(200));
    let mut lb: Lb = Builder::new()
        .seed(17)
        .build(fixed(endpoints(&[("a", 10)])), cluster.factory())
        .unwrap();
    let t = open_loop(&mut lb, 12_000, Duration::from_millis(5)).await;
    let slow = share(&t, "a10");
    println!("gray failure: the slow endpoint took {slow:.4} of requests");
    assert!(slow < 0.05, "{slow}");
}

#[tokio::test(start_paused = true)]
async fn fast_failures_cost_the_failure_penalty() {
    let cluster = Cluster::default();
    for i in 1..=10 {
        cluster
            .get(&format!("a{i}"))
            .set_latency(Duration::from_millis(10));
    }
    // Fails at once: without a penalty its RTT would look best.
    cluster.get("a10").set_latency(Duration::ZERO);
    cluster.get("a10").set_status(503);
    let mut lb: Lb = Builder::new()
        .classify(ServerErrorsAsFailures)
        .no_outlier_detection()
        .seed(17)
        .build(fixed(endpoints(&[("a", 10)])), cluster.factory())
        .unwrap();
    let t = open_loop(&mut lb, 6_000, Duration::from_millis(5)).await;
    let failing = share(&t, "a10");
    println!("fast failures: the failing endpoint took {failing:.4} of requests");
    assert!(failing < 0.03, "{failing}");
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_a_new_endpoint_by_the_formula() {
    let cluster = Cluster::default();
    let (tx, rx) = channel();
    let initial = endpoints(&[("a", 4)]);
    tx.unbounded_send(Ok(Change::Reset(initial))).unwrap();
    let ss = SlowStart::new(Duration::from_secs(60)).aggression(2.0);
    let mut lb: Lb = Builder::new()
        .slow_start(ss)
        .seed(19)
        .build(rx, cluster.factory())
        .unwrap();
    tally(&mut lb, 100).await;
    let newcomer = endpoints(&[("a", 5)]).pop().unwrap();
    tx.unbounded_send(Ok(Change::Insert(newcomer))).unwrap();
    let mut elapsed = Duration::ZERO;
    for at in [0u64, 5, 15, 30, 45, 59, 61] {
        let target = Duration::from_secs(at);
        advance(target - elapsed).await;
        elapsed = target;
        let t = tally(&mut lb, 20_000).await;
        // Four endpoints of weight w and one of weight w · f(t).
        let f = ss.factor(target);
        let want = f / (4.0 + f);
        let got = share(&t, "a5");
        println!("slow start at {at:>2} s: factor {f:.3}, share {got:.4}, expected {want:.4}");
        assert_near(&format!("share at {at} s"), got, want, 0.01);
    }
}

#[cfg(feature = "http")]
fn rtt_of(lb: &Lb, id: &str) -> Duration {
    lb.handle()
        .endpoints()
        .into_iter()
        .find(|e| e.endpoint.id.as_str() == id)
        .unwrap()
        .rtt
}

#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn server_hints_raise_the_failure_penalty() {
    let cluster = Cluster::default();
    let a1 = cluster.get("a1");
    a1.set_status(503);
    a1.0.retry_after
        .store(20, std::sync::atomic::Ordering::SeqCst);
    let build = |hints: bool| {
        let b = Builder::new()
            .round_robin()
            .classify(ServerErrorsAsFailures)
            .no_outlier_detection()
            .seed(23);
        let factory = cluster.factory();
        let eps = fixed(endpoints(&[("a", 2)]));
        if hints {
            b.hints(watertight_loadbalance::http::HeaderHints)
                .build(eps, factory)
                .unwrap()
        } else {
            b.build(eps, factory).unwrap()
        }
    };
    let mut hinted: Lb = build(true);
    tally(&mut hinted, 10).await;
    // The 503 asked for 20 s: PeakEWMA now sees a 20 s round trip.
    assert_eq!(rtt_of(&hinted, "a1"), Duration::from_secs(20));
    assert!(rtt_of(&hinted, "a2") <= Duration::from_millis(30));

    let mut plain: Lb = build(false);
    tally(&mut plain, 10).await;
    assert_eq!(rtt_of(&plain, "a1"), Duration::from_millis(250));
}
