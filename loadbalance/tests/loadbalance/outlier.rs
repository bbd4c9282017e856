//! Outlier detection with Envoy's semantics (DESIGN §8.2).

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use http::Request;
use tokio::time::{advance, Instant};
use watertight_core::classify::ServerErrorsAsFailures;
use watertight_loadbalance::event::{OutlierAction, OutlierEvent};
use watertight_loadbalance::outlier::Detection;
use watertight_loadbalance::{Builder, EndpointState, OutlierDetection};

use crate::support::*;

fn balancer(n: usize, cluster: &Cluster, od: OutlierDetection) -> Lb {
    Builder::new()
        .name("outliers")
        .round_robin()
        .classify(ServerErrorsAsFailures)
        .outlier_detection(od)
        .seed(11)
        .build(fixed(endpoints(&[("a", n)])), cluster.factory())
        .unwrap()
}

fn ejections(log: &[OutlierEvent]) -> Vec<&OutlierEvent> {
    log.iter()
        .filter(|e| matches!(e.action, OutlierAction::Ejected { .. }))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn success_rate_worked_example_ejects_exactly_the_first_host() {
    let cluster = Cluster::default();
    // a1 fails every other call: success rates {50, 100, 100, 100, 100}.
    cluster.get("a1").0.fail_every.store(2, SeqCst);
    let mut lb = balancer(5, &cluster, OutlierDetection::default());
    for _ in 0..1_000 {
        send(&mut lb, Request::new(())).await.unwrap();
        advance(Duration::from_millis(9)).await;
    }
    // The interval ends at 10 s; the next request runs the sweep.
    advance(Duration::from_millis(1_100)).await;
    send(&mut lb, Request::new(())).await.unwrap();
    let log = lb.handle().outlier_log();
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0].endpoint.as_str(), "a1");
    assert!(
        matches!(
            log[0].action,
            OutlierAction::Ejected {
                detection: Detection::SuccessRate,
                duration,
                multiplier: 1,
            } if duration == Duration::from_secs(30)
        ),
        "{:?}",
        log[0].action
    );
    assert_eq!(lb.handle().snapshot().count(EndpointState::Ejected), 1);
    // Ejected, it receives nothing.
    let before = cluster.get("a1").calls();
    tally(&mut lb, 400).await;
    assert_eq!(cluster.get("a1").calls(), before);
}

#[tokio::test(start_paused = true)]
async fn consecutive_5xx_ejection_time_grows_by_base_and_decays() {
    let cluster = Cluster::default();
    let a1 = cluster.get("a1");
    a1.set_status(503);
    let mut lb = balancer(5, &cluster, OutlierDetection::default());
    let handle = lb.handle();
    let step = Duration::from_millis(100);
    let k = || {
        handle
            .endpoints()
            .into_iter()
            .find(|e| e.endpoint.id.as_str() == "a1")
            .unwrap()
            .ejection_multiplier
    };
    // Three ejections in a row: 30 s, 60 s, 90 s.
    while ejections(&handle.outlier_log()).len() < 3 {
        send(&mut lb, Request::new(())).await.unwrap();
        advance(step).await;
    }
    // Recover during the third ejection.
    a1.set_status(200);
    let log = handle.outlier_log();
    let unejected_at = loop {
        send(&mut lb, Request::new(())).await.unwrap();
        advance(step).await;
        let log = handle.outlier_log();
        if let Some(u) = log
            .iter()
            .filter(|e| e.action == OutlierAction::Unejected)
            .nth(2)
        {
            break u.at;
        }
    };
    assert_eq!(k(), 3);
    // k decays by one for every interval in service, and no faster.
    let mut seen = vec![k()];
    let start = Instant::now();
    while Instant::now() < start + Duration::from_secs(45) {
        send(&mut lb, Request::new(())).await.unwrap();
        advance(step).await;
        if *seen.last().unwrap() != k() {
            seen.push(k());
        }
    }
    assert_eq!(seen, [3, 2, 1, 0]);
    // Failing again, it is ejected for the base time once more.
    a1.set_status(503);
    while ejections(&handle.outlier_log()).len() < 4 {
        send(&mut lb, Request::new(())).await.unwrap();
        advance(step).await;
    }
    let log_all = handle.outlier_log();
    let durations: Vec<u64> = ejections(&log_all)
        .iter()
        .map(|e| match e.action {
            OutlierAction::Ejected { duration, .. } => duration.as_secs(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(durations, [30, 60, 90, 30]);
    // Each unejection came when its ejection ran out (within one request
    // step), never before.
    let ej = ejections(&log);
    let unej: Vec<&OutlierEvent> = log_all
        .iter()
        .filter(|e| e.action == OutlierAction::Unejected)
        .collect();
    for (e, u) in ej.iter().zip(&unej) {
        let OutlierAction::Ejected { duration, .. } = e.action else {
            unreachable!()
        };
        let lasted = u.at - e.at;
        assert!(
            lasted >= duration && lasted <= duration + step,
            "{lasted:?} vs {duration:?}"
        );
    }
    assert_eq!(unej[2].at, unejected_at);
    assert!(ej.iter().all(|e| e.endpoint.as_str() == "a1"));
}

#[tokio::test(start_paused = true)]
async fn max_ejection_percent_is_respected() {
    let cluster = Cluster::default();
    for i in 1..=6 {
        cluster.get(&format!("a{i}")).set_status(503);
    }
    let mut od = OutlierDetection::default();
    od.max_ejection_percent = 30.0;
    let mut lb = balancer(10, &cluster, od);
    tally(&mut lb, 300).await;
    let handle = lb.handle();
    let log = handle.outlier_log();
    assert_eq!(ejections(&log).len(), 3, "{log:#?}");
    assert_eq!(handle.snapshot().count(EndpointState::Ejected), 3);
    let overflow = log
        .iter()
        .filter(|e| {
            e.action
                == OutlierAction::Overflow {
                    detection: Detection::Consecutive5xx,
                }
        })
        .count();
    assert_eq!(overflow, 3);
}

#[tokio::test(start_paused = true)]
async fn nine_host_cluster_can_eject_one() {
    let cluster = Cluster::default();
    cluster.get("a1").set_status(503);
    cluster.get("a2").set_status(503);
    let mut lb = balancer(9, &cluster, OutlierDetection::default());
    tally(&mut lb, 200).await;
    let log = lb.handle().outlier_log();
    // Envoy's 10% would allow none (100 · 1 / 9 > 10); always_eject_one
    // allows exactly one.
    assert_eq!(ejections(&log).len(), 1, "{log:#?}");
    assert_eq!(lb.handle().snapshot().count(EndpointState::Ejected), 1);
}

#[tokio::test(start_paused = true)]
async fn without_always_eject_one_nine_hosts_eject_none() {
    let cluster = Cluster::default();
    cluster.get("a1").set_status(503);
    let mut od = OutlierDetection::default();
    od.always_eject_one = false;
    let mut lb = balancer(9, &cluster, od);
    tally(&mut lb, 200).await;
    let log = lb.handle().outlier_log();
    assert!(ejections(&log).is_empty());
    assert!(matches!(log[0].action, OutlierAction::Overflow { .. }));
}

#[tokio::test(start_paused = true)]
async fn unenforced_gateway_failures_are_logged_not_ejected() {
    let cluster = Cluster::default();
    cluster.get("a1").set_status(502);
    let mut od = OutlierDetection::default();
    od.consecutive_5xx = None;
    let mut lb = balancer(5, &cluster, od);
    tally(&mut lb, 100).await;
    let log = lb.handle().outlier_log();
    assert_eq!(
        log.iter().map(|e| e.action).collect::<Vec<_>>(),
        [OutlierAction::NotEnforced {
            detection: Detection::ConsecutiveGatewayFailure
        }]
    );
    assert_eq!(lb.handle().snapshot().count(EndpointState::Ejected), 0);
}

#[tokio::test(start_paused = true)]
async fn failure_percentage_ejects_when_enforced() {
    let cluster = Cluster::default();
    // a1 fails every call; only the interval detectors are on.
    cluster.get("a1").0.fail_every.store(1, SeqCst);
    let mut od = OutlierDetection::default();
    od.consecutive_5xx = None;
    od.consecutive_gateway_failure = None;
    od.enforcing_success_rate = 0;
    od.enforcing_failure_percentage = 100;
    let mut lb = balancer(5, &cluster, od);
    for _ in 0..500 {
        send(&mut lb, Request::new(())).await.unwrap();
        advance(Duration::from_millis(19)).await;
    }
    advance(Duration::from_millis(600)).await;
    send(&mut lb, Request::new(())).await.unwrap();
    let log = lb.handle().outlier_log();
    let ej = ejections(&log);
    assert_eq!(ej.len(), 1, "{log:#?}");
    assert_eq!(ej[0].endpoint.as_str(), "a1");
    assert_eq!(ej[0].action.detection(), Some(Detection::FailurePercentage));
}

#[tokio::test(start_paused = true)]
async fn manual_ejection_through_the_handle() {
    let cluster = Cluster::default();
    let mut lb = balancer(5, &cluster, OutlierDetection::default());
    tally(&mut lb, 10).await;
    lb.handle().eject("a2");
    let t = tally(&mut lb, 400).await;
    assert!(!t.contains_key("a2"));
    lb.handle().uneject("a2");
    let t = tally(&mut lb, 400).await;
    assert_eq!(t["a2"], 80);
}
