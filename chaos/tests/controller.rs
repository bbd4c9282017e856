//! The controller: time to live, the steady-state guard, halting, the
//! audit log, limits and metrics.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower::{Layer, Service, ServiceExt};
use watertight_chaos::error::StartError;
use watertight_chaos::{
    Abort, AbortWhen, Action, AuditSink, ChaosController, Experiment, Fault, HeaderFaults, Latency,
    Origin, Target,
};
use watertight_core::BoxError;

use support::*;

/// Lets the experiments' supervisor tasks run.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// A service that fails every `every`-th call and takes `latency`.
fn flaky(
    every: u64,
    latency: Duration,
) -> impl Service<Req, Response = usize, Error = BoxError, Future: Send> + Clone {
    let n = Arc::new(AtomicU64::new(0));
    tower::service_fn(move |_r: Req| {
        let i = n.fetch_add(1, Ordering::Relaxed) + 1;
        async move {
            tokio::time::sleep(latency).await;
            if i.is_multiple_of(every) {
                Err::<usize, BoxError>("backend failed".into())
            } else {
                Ok(0)
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn experiment_expires_at_its_ttl() {
    let lines = Lines::default();
    let chaos = builder(&lines).build().unwrap();
    let mut svc = chaos.layer().layer(echo());
    chaos
        .start(always("ttl", 10, Fault::Abort(Abort::Error)))
        .unwrap();
    tokio::time::advance(Duration::from_millis(9_999)).await;
    settle().await;
    let status = chaos
        .experiment("ttl")
        .expect("still running before its TTL");
    assert_eq!(status.remaining, Duration::from_millis(1));
    assert!(call(&mut svc, Req::get("/")).await.is_err());

    tokio::time::advance(Duration::from_millis(1)).await;
    settle().await;
    assert!(chaos.experiment("ttl").is_none(), "gone at its TTL");
    assert!(call(&mut svc, Req::get("/")).await.is_ok());
    let records = lines.records();
    let last = records.last().unwrap();
    assert_eq!(last.action, Action::Expire);
    assert_eq!(last.experiment.as_deref(), Some("ttl"));
    assert_eq!(last.by, Origin::Controller);
}

#[tokio::test(start_paused = true)]
async fn duration_is_capped_by_max_experiment_duration() {
    let chaos = ChaosController::builder()
        .max_experiment_duration(Duration::from_secs(60))
        .build()
        .unwrap();
    let err = chaos
        .start(experiment("long", 61, Fault::Hang, 1.0, Target::all()))
        .unwrap_err();
    match err {
        StartError::Invalid(e) => {
            assert_eq!(e.field(), "duration");
            assert!(e.reason().contains("1m"), "{e}");
        }
        other => panic!("expected an invalid duration, got {other:?}"),
    }
    chaos
        .start(experiment("ok", 60, Fault::Hang, 1.0, Target::all()))
        .unwrap();
    // The default cap is an hour.
    let chaos = ChaosController::new();
    assert_eq!(chaos.max_experiment_duration(), Duration::from_secs(3600));
    assert!(chaos
        .start(experiment("long", 3601, Fault::Hang, 1.0, Target::all()))
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn abort_when_stops_an_experiment_when_the_guarded_error_rate_is_crossed() {
    let lines = Lines::default();
    let chaos = builder(&lines).build().unwrap();
    // The backend fails one call in four; the experiment adds aborts on
    // 20% of calls, which pushes the error rate past 30%.
    let mut svc = chaos.layer().layer(flaky(4, Duration::ZERO));
    chaos
        .start(
            Experiment::builder("guarded")
                .duration(Duration::from_secs(600))
                .fault(Fault::Abort(Abort::Error), 20.0)
                .abort_when(
                    AbortWhen::error_rate_above(0.3)
                        .min_calls(50)
                        .window(Duration::from_secs(60)),
                )
                .build()
                .unwrap(),
        )
        .unwrap();
    let mut calls = 0;
    while chaos.experiment("guarded").is_some() {
        calls += 1;
        assert!(calls <= 1000, "the guard never tripped");
        let _ = svc.ready().await.unwrap().call(Req::get("/")).await;
        settle().await;
    }
    assert!(calls >= 50, "not before min_calls: {calls}");
    let abort = lines
        .records()
        .into_iter()
        .find(|r| r.action == Action::Abort)
        .expect("an abort record");
    assert_eq!(abort.experiment.as_deref(), Some("guarded"));
    assert_eq!(abort.by, Origin::Controller);
    assert!(abort.reason.unwrap().contains("error rate"));
    // Stopped: only the backend's own failures remain.
    let mut failures = 0;
    for _ in 0..400 {
        if call(&mut svc, Req::get("/")).await.is_err() {
            failures += 1;
        }
    }
    assert_eq!(failures, 100);
}

#[tokio::test(start_paused = true)]
async fn abort_when_keeps_a_healthy_experiment_running() {
    let chaos = controller();
    let mut svc = chaos.layer().layer(flaky(10, Duration::ZERO));
    chaos
        .start(
            Experiment::builder("healthy")
                .duration(Duration::from_secs(600))
                .fault(Fault::Latency(Latency::fixed(ms(5))), 50.0)
                .abort_when(AbortWhen::error_rate_above(0.2).min_calls(20))
                .build()
                .unwrap(),
        )
        .unwrap();
    for _ in 0..500 {
        let _ = svc.ready().await.unwrap().call(Req::get("/")).await;
    }
    settle().await;
    assert!(chaos.experiment("healthy").is_some());
}

#[tokio::test(start_paused = true)]
async fn abort_when_p99_stops_an_experiment() {
    let lines = Lines::default();
    let chaos = builder(&lines).build().unwrap();
    let svc = chaos.layer().layer(flaky(u64::MAX, ms(10)));
    chaos
        .start(
            Experiment::builder("slow-tail")
                .duration(Duration::from_secs(600))
                .fault(Fault::Latency(Latency::fixed(ms(500))), 5.0)
                .abort_when(
                    AbortWhen::p99_above(ms(200))
                        .min_calls(100)
                        .window(Duration::from_secs(10)),
                )
                .build()
                .unwrap(),
        )
        .unwrap();
    // Steady traffic: 50 requests every 100 ms.
    for _ in 0..100 {
        if chaos.experiment("slow-tail").is_none() {
            break;
        }
        for _ in 0..50 {
            let mut s = svc.clone();
            tokio::spawn(async move {
                let _ = s.ready().await.unwrap().call(Req::get("/")).await;
            });
        }
        tokio::time::sleep(ms(100)).await;
    }
    settle().await;
    assert!(
        chaos.experiment("slow-tail").is_none(),
        "the p99 guard tripped"
    );
    let abort = lines
        .records()
        .into_iter()
        .find(|r| r.action == Action::Abort)
        .unwrap();
    assert!(abort.reason.unwrap().contains("p99"));
}

#[tokio::test(start_paused = true)]
async fn halt_all_stops_every_experiment() {
    let lines = Lines::default();
    let chaos = builder(&lines).build().unwrap();
    let mut svc = chaos.layer().layer(echo());
    for name in ["a", "b", "c"] {
        chaos
            .start(always(name, 600, Fault::Abort(Abort::Error)))
            .unwrap();
    }
    assert_eq!(chaos.experiments().len(), 3);
    assert!(call(&mut svc, Req::get("/")).await.is_err());
    assert_eq!(chaos.halt_all(), ["a", "b", "c"]);
    assert!(chaos.experiments().is_empty());
    assert!(call(&mut svc, Req::get("/")).await.is_ok());
    let halts: Vec<_> = lines
        .records()
        .into_iter()
        .filter(|r| r.action == Action::Halt)
        .map(|r| r.experiment.unwrap())
        .collect();
    assert_eq!(halts, ["a", "b", "c"]);
    // Halting nothing is still recorded.
    assert!(chaos.halt_all().is_empty());
    let last = lines.records().pop().unwrap();
    assert_eq!((last.action, last.experiment), (Action::Halt, None));
    // The supervisors are gone: nothing expires later.
    tokio::time::advance(Duration::from_secs(700)).await;
    settle().await;
    assert!(lines.records().iter().all(|r| r.action != Action::Expire));
}

#[tokio::test(start_paused = true)]
async fn audit_records_each_transition() {
    let lines = Lines::default();
    let chaos = builder(&lines).audit_capacity(4).build().unwrap();
    let mut svc = chaos.layer().layer(echo());
    let abort = |name| always(name, 60, Fault::Abort(Abort::Error));
    chaos.start(abort("stopped")).unwrap();
    chaos.stop("stopped").unwrap();
    chaos.start(abort("expired")).unwrap();
    tokio::time::advance(Duration::from_secs(60)).await;
    settle().await;
    chaos
        .start(
            Experiment::builder("aborted")
                .duration(Duration::from_secs(60))
                .fault(Fault::Abort(Abort::Error), 100.0)
                .abort_when(AbortWhen::error_rate_above(0.5).min_calls(1))
                .build()
                .unwrap(),
        )
        .unwrap();
    let _ = svc.ready().await.unwrap().call(Req::get("/")).await;
    settle().await;
    chaos.start(abort("halted")).unwrap();
    chaos.halt_all();

    let got: Vec<(u64, Action, String, Origin)> = lines
        .records()
        .into_iter()
        .map(|r| (r.seq, r.action, r.experiment.unwrap(), r.by))
        .collect();
    let s = |x: &str| x.to_owned();
    assert_eq!(
        got,
        [
            (1, Action::Start, s("stopped"), Origin::Local),
            (2, Action::Stop, s("stopped"), Origin::Local),
            (3, Action::Start, s("expired"), Origin::Local),
            (4, Action::Expire, s("expired"), Origin::Controller),
            (5, Action::Start, s("aborted"), Origin::Local),
            (6, Action::Abort, s("aborted"), Origin::Controller),
            (7, Action::Start, s("halted"), Origin::Local),
            (8, Action::Halt, s("halted"), Origin::Local),
        ]
    );
    let first = &lines.records()[0];
    assert_eq!(first.controller, "test");
    assert_eq!(
        first.experiment_spec.as_ref().map(|e| e.name.as_str()),
        Some("stopped"),
        "a start record carries the experiment"
    );
    // Memory keeps the last `audit_capacity` records.
    let kept: Vec<u64> = chaos.audit().iter().map(|r| r.seq).collect();
    assert_eq!(kept, [5, 6, 7, 8]);
}

#[tokio::test(start_paused = true)]
async fn audit_goes_to_a_file_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let chaos = ChaosController::builder()
        .audit_sink(AuditSink::file(&path).unwrap())
        .build()
        .unwrap();
    chaos
        .start(experiment("f", 60, Fault::Hang, 1.0, Target::all()))
        .unwrap();
    chaos.stop("f").unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let actions: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["action"].to_string())
        .collect();
    assert_eq!(actions, ["\"start\"", "\"stop\""]);
}

#[tokio::test(start_paused = true)]
async fn names_must_be_unique_and_experiments_are_limited() {
    let chaos = ChaosController::builder()
        .max_experiments(2)
        .build()
        .unwrap();
    chaos
        .start(experiment("a", 60, Fault::Hang, 1.0, Target::all()))
        .unwrap();
    assert_eq!(
        chaos
            .start(experiment("a", 60, Fault::Hang, 1.0, Target::all()))
            .unwrap_err(),
        StartError::AlreadyRunning("a".into())
    );
    chaos
        .start(experiment("b", 60, Fault::Hang, 1.0, Target::all()))
        .unwrap();
    assert_eq!(
        chaos
            .start(experiment("c", 60, Fault::Hang, 1.0, Target::all()))
            .unwrap_err(),
        StartError::TooManyExperiments(2)
    );
    assert_eq!(chaos.stop("zzz").unwrap_err().name(), "zzz");
}

#[tokio::test(start_paused = true)]
async fn experiments_modified_after_building_are_validated_again() {
    let chaos = ChaosController::new();
    let mut exp = experiment("ok", 60, Fault::Hang, 1.0, Target::all());
    exp.duration = Duration::ZERO;
    match chaos.start(exp).unwrap_err() {
        StartError::Invalid(e) => assert_eq!(e.field(), "duration"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn builder_rejects_invalid_configuration() {
    let field = |b: watertight_chaos::ControllerBuilder| b.build().unwrap_err().field().to_owned();
    assert_eq!(field(ChaosController::builder().name("")), "name");
    assert_eq!(
        field(ChaosController::builder().max_experiment_duration(Duration::ZERO)),
        "max_experiment_duration"
    );
    assert_eq!(
        field(ChaosController::builder().max_experiments(0)),
        "max_experiments"
    );
    assert_eq!(
        field(ChaosController::builder().max_active_faults(0)),
        "max_active_faults"
    );
    let e = ChaosController::builder()
        .header_faults(HeaderFaults::new().max_delay(Duration::ZERO))
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid chaos configuration: `header_faults.max_delay` must be greater than zero"
    );
}

#[tokio::test(start_paused = true)]
async fn faults_and_experiments_are_counted_in_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let chaos = metrics::with_local_recorder(&recorder, || {
        let chaos = ChaosController::builder()
            .name("m")
            .seed(1)
            .build()
            .unwrap();
        chaos
            .start(always("x", 60, Fault::Abort(Abort::Error)))
            .unwrap();
        chaos
    });
    let mut svc = chaos.layer().layer(echo());
    for _ in 0..3 {
        let _ = svc.ready().await.unwrap().call(Req::get("/")).await;
    }
    let snapshot = snapshotter.snapshot().into_vec();
    let value = |name: &str| {
        snapshot
            .iter()
            .find(|(k, ..)| {
                let key = k.key();
                key.name() == name
                    && key.labels().any(|l| l.key() == "name" && l.value() == "m")
                    && key
                        .labels()
                        .all(|l| l.key() != "experiment" || l.value() == "x")
            })
            .map(|(.., v)| v)
    };
    assert_eq!(
        value("watertight_chaos_faults_injected_total"),
        Some(&DebugValue::Counter(3))
    );
    assert_eq!(
        value("watertight_chaos_experiments"),
        Some(&DebugValue::Gauge(1.0.into()))
    );
    assert_eq!(
        value("watertight_chaos_active_faults"),
        Some(&DebugValue::Gauge(0.0.into()))
    );
}
