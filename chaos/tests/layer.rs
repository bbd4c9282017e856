//! The chaos layer on a service of a non-HTTP protocol: each fault's
//! effect, percentages, targeting, the active-fault cap, determinism.

mod support;

use std::task::Poll;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;
use tokio_test::task::Spawn;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Layer, Service, ServiceExt};
use watertight_chaos::error::Injected;
use watertight_chaos::{Abort, ChaosController, Experiment, Fault, Latency, Target};
use watertight_core::{find_cause, is_caused_by, BoxError};

use support::*;

/// How long one call takes, in virtual time.
async fn timed<S>(svc: &mut S, req: Req) -> Duration
where
    S: Service<Req, Response = usize, Error = BoxError>,
{
    let start = Instant::now();
    call(svc, req).await.unwrap();
    start.elapsed()
}

/// Polls a spawned service for readiness once.
fn poll_ready<S: Service<Req> + Unpin>(svc: &mut Spawn<S>) -> Poll<Result<(), S::Error>> {
    svc.enter(|cx, mut s| s.poll_ready(cx))
}

#[tokio::test(start_paused = true)]
async fn disabled_layer_passes_requests_through() {
    let chaos = controller();
    let mut svc = chaos.layer().layer(echo());
    assert_eq!(call(&mut svc, Req::get("/abc")).await.unwrap(), 4);
    assert_eq!(chaos.active_faults(), 0);
}

#[tokio::test(start_paused = true)]
async fn fixed_latency_delays_by_exactly_the_fault() {
    let chaos = controller();
    let mut svc = chaos.layer().layer(echo());
    chaos
        .start(always("fixed", 60, Fault::Latency(Latency::fixed(ms(250)))))
        .unwrap();
    for _ in 0..5 {
        assert_eq!(timed(&mut svc, Req::get("/")).await, ms(250));
    }
}

#[tokio::test(start_paused = true)]
async fn uniform_latency_stays_within_its_bounds() {
    let chaos = controller();
    let mut svc = chaos.layer().layer(echo());
    chaos
        .start(always(
            "uniform",
            600,
            Fault::Latency(Latency::uniform(ms(100), ms(200))),
        ))
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..500 {
        let d = timed(&mut svc, Req::get("/")).await;
        assert!(d >= ms(100) && d <= ms(200), "{d:?}");
        seen.push(d);
    }
    let mean = seen.iter().sum::<Duration>() / seen.len() as u32;
    assert!(mean > ms(145) && mean < ms(155), "mean {mean:?}");
    assert!(seen.iter().any(|d| *d < ms(110)) && seen.iter().any(|d| *d > ms(190)));
}

#[tokio::test(start_paused = true)]
async fn log_normal_latency_matches_its_median_and_p99() {
    let chaos = controller();
    let mut svc = chaos.layer().layer(echo());
    let fault = Fault::Latency(Latency::LogNormal {
        median: ms(20),
        p99: ms(100),
        max: Some(ms(300)),
    });
    chaos.start(always("log-normal", 3600, fault)).unwrap();
    let mut seen = Vec::new();
    for _ in 0..4000 {
        seen.push(timed(&mut svc, Req::get("/")).await);
    }
    seen.sort();
    let median = seen[2000].as_secs_f64() * 1e3;
    let p99 = seen[3960].as_secs_f64() * 1e3;
    assert!((median - 20.0).abs() < 1.5, "median {median} ms");
    assert!((p99 - 100.0).abs() < 15.0, "p99 {p99} ms");
    assert!(*seen.last().unwrap() <= ms(300), "max caps the tail");
}

#[tokio::test(start_paused = true)]
async fn abort_returns_injected_error_without_calling_inner() {
    let chaos = controller();
    let (mut svc, mut handle) = tower_test::mock::spawn_layer::<Req, usize, _>(chaos.layer());
    chaos
        .start(always("abort", 60, Fault::Abort(Abort::Error)))
        .unwrap();
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call(Req::get("/")).await.unwrap_err();
    let injected = find_cause::<Injected>(&*err).expect("an injected error");
    assert_eq!(injected.experiment(), Some("abort"));
    assert_eq!(injected.status(), None);
    assert!(
        handle.poll_request().is_pending(),
        "the inner service was called"
    );
}

#[tokio::test(start_paused = true)]
async fn abort_with_a_status_on_a_plain_service_carries_the_status() {
    let chaos = controller();
    let mut svc = chaos.layer().layer(echo());
    chaos
        .start(always("abort-503", 60, Fault::Abort(Abort::Http(503))))
        .unwrap();
    let err = call(&mut svc, Req::get("/")).await.unwrap_err();
    assert_eq!(find_cause::<Injected>(&*err).unwrap().status(), Some(503));
    chaos.stop("abort-503").unwrap();
    chaos
        .start(always("abort-grpc", 60, Fault::Abort(Abort::Grpc(14))))
        .unwrap();
    let err = call(&mut svc, Req::get("/")).await.unwrap_err();
    assert_eq!(
        find_cause::<Injected>(&*err).unwrap().grpc_status(),
        Some(14)
    );
}

#[tokio::test(start_paused = true)]
async fn latency_then_abort_delays_the_abort() {
    let chaos = controller();
    let mut svc = chaos.layer().layer(echo());
    chaos
        .start(
            Experiment::builder("both")
                .duration(Duration::from_secs(60))
                .fault(Fault::Latency(Latency::fixed(ms(40))), 100.0)
                .fault(Fault::Abort(Abort::Error), 100.0)
                .build()
                .unwrap(),
        )
        .unwrap();
    let start = Instant::now();
    assert!(call(&mut svc, Req::get("/")).await.is_err());
    assert_eq!(start.elapsed(), ms(40));
}

#[tokio::test(start_paused = true)]
async fn hang_trips_an_outer_timeout() {
    let chaos = controller();
    let mut svc = tower::ServiceBuilder::new()
        .timeout(Duration::from_secs(2))
        .layer(chaos.layer())
        .service(echo());
    chaos.start(always("hang", 600, Fault::Hang)).unwrap();
    let start = Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Req::get("/"))
        .await
        .unwrap_err();
    assert!(
        is_caused_by::<tower::timeout::error::Elapsed>(&*err),
        "{err}"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    // The timed-out request gave its slot back.
    assert_eq!(chaos.active_faults(), 0);
}

#[tokio::test(start_paused = true)]
async fn hung_requests_resume_when_the_experiment_is_halted() {
    let chaos = controller();
    let mut svc = chaos.layer().layer(echo());
    chaos.start(always("hang", 600, Fault::Hang)).unwrap();
    let fut = svc.ready().await.unwrap().call(Req::get("/xy"));
    let mut task = tokio_test::task::spawn(fut);
    assert_pending!(task.poll());
    tokio::time::advance(Duration::from_secs(100)).await;
    assert_pending!(task.poll());
    assert_eq!(chaos.active_faults(), 1);
    chaos.halt_all();
    assert!(task.is_woken(), "halting wakes the hung request");
    assert_eq!(assert_ready_ok!(task.poll()), 3);
    assert_eq!(chaos.active_faults(), 0);
}

#[tokio::test(start_paused = true)]
async fn unavailable_makes_poll_ready_pending_for_the_duration() {
    let chaos = controller();
    let mut svc = tokio_test::task::spawn(chaos.layer().layer(echo()));
    chaos
        .start(always(
            "unavailable",
            600,
            Fault::Unavailable(Duration::from_secs(5)),
        ))
        .unwrap();
    assert_pending!(poll_ready(&mut svc));
    assert_eq!(chaos.active_faults(), 1);
    tokio::time::advance(Duration::from_millis(4999)).await;
    assert!(!svc.is_woken());
    assert_pending!(poll_ready(&mut svc));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(svc.is_woken(), "woken at the end of the period");
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(chaos.active_faults(), 0);
    assert_eq!(svc.call(Req::get("/a")).await.unwrap(), 2);
    // The next call cycle rolls again.
    assert_pending!(poll_ready(&mut svc));
}

#[tokio::test(start_paused = true)]
async fn unavailable_ends_early_when_the_experiment_stops() {
    let chaos = controller();
    let mut svc = tokio_test::task::spawn(chaos.layer().layer(echo()));
    chaos
        .start(always(
            "unavailable",
            600,
            Fault::Unavailable(Duration::from_secs(60)),
        ))
        .unwrap();
    assert_pending!(poll_ready(&mut svc));
    chaos.stop("unavailable").unwrap();
    assert!(svc.is_woken());
    assert_ready_ok!(poll_ready(&mut svc));
}

#[tokio::test(start_paused = true)]
async fn unavailable_targets_the_instance_endpoint() {
    let chaos = ChaosController::builder()
        .seed(1)
        .instance(endpoint("10.0.0.1:80", "a", "v1"))
        .build()
        .unwrap();
    let mut svc = tokio_test::task::spawn(chaos.layer().layer(echo()));
    chaos
        .start(experiment(
            "zone-b",
            600,
            Fault::Unavailable(Duration::from_secs(5)),
            100.0,
            Target::all().zone("b"),
        ))
        .unwrap();
    assert_ready_ok!(poll_ready(&mut svc));
    chaos.halt_all();
    chaos
        .start(experiment(
            "zone-a",
            600,
            Fault::Unavailable(Duration::from_secs(5)),
            100.0,
            Target::all().zone("a"),
        ))
        .unwrap();
    svc.call(Req::get("/")).await.unwrap();
    assert_pending!(poll_ready(&mut svc));
}

/// `n` calls; how many were aborted.
async fn aborted_of(chaos: &ChaosController, n: u32, req: impl Fn() -> Req) -> u32 {
    let mut svc = chaos.layer().layer(echo());
    let mut aborted = 0;
    for _ in 0..n {
        if call(&mut svc, req()).await.is_err() {
            aborted += 1;
        }
    }
    aborted
}

#[tokio::test(start_paused = true)]
async fn injection_percentage_within_sampling_error_over_100k_requests() {
    let chaos = controller();
    chaos
        .start(experiment(
            "ten-percent",
            600,
            Fault::Abort(Abort::Error),
            10.0,
            Target::all(),
        ))
        .unwrap();
    let n = 100_000;
    let aborted = aborted_of(&chaos, n, || Req::get("/")).await;
    // Binomial(100k, 0.1): σ ≈ 95; five σ either side.
    assert!((9_525..=10_475).contains(&aborted), "{aborted} aborted");
    let status = chaos.experiment("ten-percent").unwrap();
    assert_eq!(status.matched, u64::from(n));
    assert_eq!(status.injected, u64::from(aborted));
}

#[tokio::test(start_paused = true)]
async fn fractional_percentages_below_one_percent_hold() {
    let chaos = controller();
    chaos
        .start(experiment(
            "half-percent",
            600,
            Fault::Abort(Abort::Error),
            0.5,
            Target::all(),
        ))
        .unwrap();
    let aborted = aborted_of(&chaos, 100_000, || Req::get("/")).await;
    // Binomial(100k, 0.005): mean 500, σ ≈ 22.
    assert!((390..=610).contains(&aborted), "{aborted} aborted");
}

#[tokio::test(start_paused = true)]
async fn seeded_controllers_inject_identically() {
    let run = || async {
        let chaos = controller();
        chaos
            .start(experiment(
                "coin",
                600,
                Fault::Abort(Abort::Error),
                50.0,
                Target::all(),
            ))
            .unwrap();
        let mut svc = chaos.layer().layer(echo());
        let mut pattern = Vec::new();
        for _ in 0..200 {
            pattern.push(call(&mut svc, Req::get("/")).await.is_err());
        }
        pattern
    };
    let (a, b) = (run().await, run().await);
    assert_eq!(a, b);
    assert!(a.iter().any(|x| *x) && a.iter().any(|x| !*x));
}

#[tokio::test(start_paused = true)]
async fn targeting_matches_method_path_prefix_and_headers() {
    let chaos = controller();
    let target = Target::all()
        .method("POST")
        .path_prefix("/api/")
        .header("x-canary", "1");
    chaos
        .start(experiment(
            "t",
            600,
            Fault::Abort(Abort::Error),
            100.0,
            target,
        ))
        .unwrap();
    let post = |path| Req {
        method: Some("POST"),
        path: Some(path),
        ..Req::default()
    };
    assert!(is_hit(&chaos, post("/api/orders").header("x-canary", "1")).await);
    assert!(!is_hit(&chaos, post("/api/orders").header("x-canary", "0")).await);
    assert!(!is_hit(&chaos, post("/api/orders")).await);
    assert!(!is_hit(&chaos, post("/apix").header("x-canary", "1")).await);
    assert!(!is_hit(&chaos, Req::get("/api/orders").header("x-canary", "1")).await);
    assert!(
        !is_hit(&chaos, Req::new()).await,
        "a request without a method or path"
    );
}

#[tokio::test(start_paused = true)]
async fn targeting_matches_the_selected_endpoint_locality_and_labels() {
    let chaos = controller();
    chaos
        .start(experiment(
            "zone-c-v2",
            600,
            Fault::Abort(Abort::Error),
            100.0,
            Target::all().zone("c").label("version", "v2"),
        ))
        .unwrap();
    assert!(is_hit(&chaos, Req::get("/").to(endpoint("10.0.0.1:80", "c", "v2"))).await);
    assert!(!is_hit(&chaos, Req::get("/").to(endpoint("10.0.0.1:80", "c", "v1"))).await);
    assert!(!is_hit(&chaos, Req::get("/").to(endpoint("10.0.0.1:80", "b", "v2"))).await);
    assert!(
        !is_hit(&chaos, Req::get("/")).await,
        "no endpoint: no match for an endpoint target"
    );
}

#[tokio::test(start_paused = true)]
async fn targeting_falls_back_to_the_instance_endpoint() {
    let chaos = ChaosController::builder()
        .seed(3)
        .instance(endpoint("10.0.0.9:80", "c", "v1"))
        .build()
        .unwrap();
    chaos
        .start(experiment(
            "zone-c",
            600,
            Fault::Abort(Abort::Error),
            100.0,
            Target::all().zone("c"),
        ))
        .unwrap();
    assert!(is_hit(&chaos, Req::get("/")).await);
    // The balancer's choice wins over the instance.
    assert!(!is_hit(&chaos, Req::get("/").to(endpoint("10.0.0.1:80", "a", "v1"))).await);
}

#[tokio::test(start_paused = true)]
async fn max_active_faults_caps_concurrent_faults() {
    let chaos = ChaosController::builder()
        .seed(5)
        .max_active_faults(2)
        .build()
        .unwrap();
    let svc = chaos.layer().layer(echo());
    chaos
        .start(always(
            "slow",
            600,
            Fault::Latency(Latency::fixed(Duration::from_secs(1))),
        ))
        .unwrap();
    let start = Instant::now();
    let calls = (0..5).map(|_| {
        let mut svc = svc.clone();
        async move {
            let fut = svc.ready().await.unwrap().call(Req::get("/"));
            fut.await.unwrap();
            start.elapsed()
        }
    });
    let mut times = join_all(calls).await;
    times.sort();
    assert_eq!(times, [ms(0), ms(0), ms(0), ms(1000), ms(1000)]);
    assert_eq!(chaos.active_faults(), 0);
    assert_eq!(chaos.experiment("slow").unwrap().injected, 2);
    // Slots came back: the next two are delayed again.
    let again = (0..2).map(|_| {
        let mut svc = svc.clone();
        async move { timed(&mut svc, Req::get("/")).await }
    });
    assert_eq!(join_all(again).await, [ms(1000), ms(1000)]);
}

#[test]
fn experiments_need_a_runtime() {
    let chaos = ChaosController::new();
    let err = chaos
        .start(experiment("x", 1, Fault::Hang, 1.0, Target::all()))
        .unwrap_err();
    assert_eq!(err, watertight_chaos::error::StartError::NoRuntime);
}

/// Durations from a millisecond to far beyond any experiment.
fn any_duration() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        8 => (1u64..5_000).prop_map(|n| format!("{n}ms")),
        2 => (1u64..7_200).prop_map(|n| format!("{n}s")),
        1 => Just("99999999h".to_owned()),
    ]
}

fn any_fault() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::json;
    let percent = prop_oneof![Just(100.0), Just(0.0001), 0.0..100.0f64];
    let status = prop_oneof![9 => 200u16..600, 1 => 0u16..1000];
    (percent, 0..6usize, any_duration(), any_duration(), status).prop_map(
        |(percent, kind, a, b, status)| match kind {
            0 => json!({"type": "latency", "percent": percent, "fixed": a}),
            1 => json!({"type": "latency", "percent": percent, "median": a, "p99": b}),
            2 => json!({"type": "latency", "percent": percent, "min": a, "max": b}),
            3 => json!({"type": "abort", "percent": percent, "status": status}),
            4 => json!({"type": "hang", "percent": percent}),
            _ => json!({"type": "unavailable", "percent": percent, "duration": a}),
        },
    )
}

#[test]
fn accepted_experiments_never_panic_the_layer() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let experiment_duration = prop_oneof![
        9 => (1u64..3_600).prop_map(|n| format!("{n}s")),
        1 => any_duration(),
    ];
    let strategy = (
        experiment_duration,
        prop::collection::vec(any_fault(), 1..4),
        prop::option::of(0.01..0.99f64),
    );
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    let started = std::cell::Cell::new(0u32);
    runner
        .run(&strategy, |(duration, faults, guard)| {
            let mut doc = serde_json::json!({
                "name": "fuzz", "duration": duration, "faults": faults,
            });
            if let Some(rate) = guard {
                doc["abort_when"] =
                    serde_json::json!({"error_rate_above": rate, "window": "10ms", "min_calls": 1});
            }
            let Ok(exp) = Experiment::from_json(doc.to_string().as_bytes()) else {
                return Ok(());
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let chaos = controller();
                if chaos.start(exp).is_err() {
                    return;
                }
                started.set(started.get() + 1);
                let mut svc = chaos.layer().layer(echo());
                for _ in 0..20 {
                    let call = async {
                        let _ = svc.ready().await?.call(Req::get("/")).await;
                        Ok::<_, BoxError>(())
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(1), call).await;
                }
                chaos.halt_all();
                // An unavailable service gives its slot back when next
                // polled, or dropped.
                drop(svc);
                assert_eq!(chaos.active_faults(), 0, "every slot came back");
            });
            Ok(())
        })
        .unwrap();
    assert!(
        started.get() >= 24,
        "only {} experiments started",
        started.get()
    );
}
