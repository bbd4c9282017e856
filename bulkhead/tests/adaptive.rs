//! AdaptiveConcurrency: the layer's sampling and classification, and each
//! limit algorithm's convergence against a server of known capacity.

mod support;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tower::{service_fn, Layer, Service, ServiceExt};
use watertight_bulkhead::event::{Cause, Event};
use watertight_bulkhead::limit::{
    Aimd, AimdConfig, EnvoyGradient, Gradient2, LimitAlgorithm, Sample, Vegas, Windowed,
};
use watertight_bulkhead::{AdaptiveConcurrencyLayer, AdaptiveConfig, AlgorithmConfig};
use watertight_core::classify::classify_fn;
use watertight_core::{BoxError, ResponseClass};

use support::{open_loop, Manual, Recorder, Run, Server};

/// The server of the convergence tests: true capacity `C` (requests
/// worked on at once, each 40..=60 ms), a FIFO queue of `C / 5` behind it,
/// and a fast `503` beyond that.
const C: usize = 40;
const QUEUE: usize = C / 5;
const SERVICE: (Duration, Duration) = (Duration::from_millis(40), Duration::from_millis(60));

/// Runs 70 s of virtual time at three times the server's capacity through
/// an adaptive limit driven by `algorithm`, reading the limit over the last
/// 30 s.
async fn converge<A>(name: &str, algorithm: A) -> (Run, Duration)
where
    A: LimitAlgorithm + Clone + Sync + std::fmt::Debug,
{
    let server = Server::new(C, QUEUE, SERVICE, 11);
    let unloaded_p99 = server.unloaded_quantile(0.99);
    let (layer, handle) = AdaptiveConcurrencyLayer::builder()
        .name(name)
        .algorithm(algorithm)
        .build()
        .unwrap()
        .shared();
    let svc = layer.layer(server).map_err(Into::into);
    let capacity_rps = C as f64 / 0.050;
    let mut run = open_loop(
        svc,
        |_| 3.0 * capacity_rps,
        Duration::from_secs(70),
        Duration::from_secs(40),
        move || handle.limit(),
    )
    .await;
    let p99 = run.p99();
    println!(
        "{name}: settled limit mean {:.1} (min {}, max {}) for capacity {C}; \
         p99 of admitted {p99:?} (unloaded p99 {unloaded_p99:?}); \
         {} served, {} shed by the server, {} rejected by the limit",
        run.mean_limit(),
        run.min_limit(),
        run.max_limit(),
        run.served.len(),
        run.shed_by_server,
        run.rejected,
    );
    (run, unloaded_p99)
}

fn assert_converged(mut run: Run, unloaded_p99: Duration) {
    let mean = run.mean_limit();
    let c = C as f64;
    assert!(
        (0.75 * c..=1.25 * c).contains(&mean),
        "settled at {mean:.1}, capacity {C}"
    );
    let p99 = run.p99();
    assert!(
        p99 < unloaded_p99 * 2,
        "p99 {p99:?}, unloaded {unloaded_p99:?}"
    );
}

// AIMD finds the limit only through drops: it climbs by one per window to
// where the server starts shedding and backs off by 10% there.
#[tokio::test(start_paused = true)]
async fn aimd_settles_near_capacity_under_three_times_the_load() {
    let (run, p99) = converge("aimd", Windowed::<Aimd>::default()).await;
    assert_converged(run, p99);
}

// Vegas stops on its own queue estimate, before the server sheds.
#[tokio::test(start_paused = true)]
async fn vegas_settles_near_capacity_under_three_times_the_load() {
    let (run, p99) = converge("vegas", Windowed::<Vegas>::default()).await;
    assert_eq!(run.shed_by_server, 0, "settles before the server sheds");
    assert_converged(run, p99);
}

// Gradient2 tolerates latency 1.5× its long-term average, more than this
// server's queue allows: the server's drops hold it (10% backoff per window
// with a drop).
#[tokio::test(start_paused = true)]
async fn gradient2_settles_near_capacity_under_three_times_the_load() {
    let (run, p99) = converge("gradient2", Windowed::<Gradient2>::default()).await;
    assert_converged(run, p99);
}

// Envoy's controller grows the limit up to 2× (+√) per 100 ms while latency
// is within 25% of the minimum; the server's drops bound it, and its minimum
// RTT is measured again (limit pinned to 3) after 60 s plus jitter.
#[tokio::test(start_paused = true)]
async fn envoy_gradient_settles_near_capacity_under_three_times_the_load() {
    let (run, p99) = converge("envoy", EnvoyGradient::default()).await;
    assert_eq!(run.min_limit(), 3, "the minimum RTT was measured again");
    assert_converged(run, p99);
}

/// An algorithm that records its samples and follows a script.
#[derive(Clone, Debug, Default)]
struct Recording(Arc<Mutex<Vec<Sample>>>);

impl LimitAlgorithm for Recording {
    fn initial_limit(&self) -> u32 {
        2
    }

    fn update(&mut self, sample: &Sample) -> u32 {
        let mut v = self.0.lock();
        v.push(*sample);
        2 + v.len() as u32
    }
}

#[tokio::test(start_paused = true)]
async fn samples_carry_rtt_in_flight_and_the_drop_verdict_of_classify() {
    let recording = Recording::default();
    let classify = classify_fn(|r: &Result<u32, BoxError>| match r {
        Ok(0) => ResponseClass::Ignored,
        Ok(1) => ResponseClass::FATAL,
        Ok(_) => ResponseClass::Success,
        Err(_) => ResponseClass::RETRYABLE,
    });
    let backend = Manual::default();
    let mut svc = AdaptiveConcurrencyLayer::builder()
        .algorithm(recording.clone())
        .classify(classify)
        .build()
        .unwrap()
        .layer(backend.clone());
    let handle = svc.handle();
    assert_eq!(handle.limit(), 2, "the algorithm's initial limit");

    let first = svc.ready().await.unwrap().call(5);
    tokio::time::advance(Duration::from_millis(10)).await;
    let second = tokio::spawn(svc.ready().await.unwrap().call(6));
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_millis(20)).await;
    backend.answer(5, false);
    assert_eq!(first.await.unwrap(), 5);
    backend.answer(6, true);
    assert!(second.await.unwrap().is_err());

    let samples = recording.0.lock().clone();
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0].rtt, Duration::from_millis(30));
    assert_eq!((samples[0].in_flight, samples[0].dropped), (1, false));
    assert_eq!(samples[1].rtt, Duration::from_millis(20));
    assert_eq!((samples[1].in_flight, samples[1].dropped), (2, true));
    assert_eq!(handle.limit(), 4, "each sample's limit applied");

    // Ignored and non-retryable results are not samples.
    for id in [0, 1] {
        let call = tokio::spawn(svc.ready().await.unwrap().call(id));
        tokio::task::yield_now().await;
        backend.answer(id, false);
        call.await.unwrap().unwrap();
    }
    assert_eq!(recording.0.lock().len(), 2);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_gives_its_permit_back_and_is_no_sample() {
    let recording = Recording::default();
    let backend = Manual::default();
    let mut svc = AdaptiveConcurrencyLayer::builder()
        .algorithm(recording.clone())
        .build()
        .unwrap()
        .layer(backend.clone());
    let a = svc.ready().await.unwrap().call(1);
    let b = svc.ready().await.unwrap().call(2);
    let full = svc.ready().await.unwrap().call(3).await.unwrap_err();
    assert!(watertight_core::is_caused_by::<
        watertight_bulkhead::error::Full,
    >(&*full));
    drop((a, b));
    assert_eq!(svc.handle().in_flight(), 0);
    assert!(recording.0.lock().is_empty());
    let _admitted = svc.ready().await.unwrap().call(4);
    assert_eq!(svc.handle().in_flight(), 1);
}

#[tokio::test(start_paused = true)]
async fn retryable_failures_are_drops_that_lower_the_limit() {
    let mut config = AimdConfig::default();
    config.initial_limit = 50;
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let mut svc = AdaptiveConcurrencyLayer::builder()
        .name("aimd")
        .algorithm(Aimd::new(config).unwrap())
        .on_event(move |e| log.lock().push(e.clone()))
        .build()
        .unwrap()
        .layer(service_fn(|fail: bool| async move {
            if fail {
                Err::<(), BoxError>("503".into())
            } else {
                Ok(())
            }
        }));
    svc.ready().await.unwrap().call(true).await.unwrap_err();
    assert_eq!(svc.handle().limit(), 45);
    svc.ready().await.unwrap().call(true).await.unwrap_err();
    assert_eq!(svc.handle().limit(), 40);
    let events = events.lock();
    let Event::LimitChanged(last) = events.last().unwrap() else {
        panic!("{events:?}")
    };
    assert_eq!((last.from, last.to, last.cause), (45, 40, Cause::Adapted));
}

#[tokio::test(start_paused = true)]
async fn the_limit_is_a_gauge_from_construction_on() {
    let recorder = Recorder::default();
    let mut config = AimdConfig::default();
    config.initial_limit = 30;
    let mut svc = recorder.with(|| {
        AdaptiveConcurrencyLayer::builder()
            .name("api")
            .algorithm(Aimd::new(config).unwrap())
            .build()
            .unwrap()
            .layer(service_fn(|_: ()| async {
                Err::<(), BoxError>("timeout".into())
            }))
    });
    let api = [("name", "api")];
    let at_start = recorder.snapshot();
    assert_eq!(
        at_start.get("watertight_adaptive_concurrency_limit", &api),
        Some(30.0)
    );
    assert_eq!(
        at_start.get("watertight_adaptive_concurrency_in_flight", &api),
        Some(0.0)
    );
    assert_eq!(
        at_start.get("watertight_adaptive_concurrency_queued", &api),
        Some(0.0)
    );
    svc.ready().await.unwrap().call(()).await.unwrap_err();
    let after = recorder.snapshot();
    assert_eq!(
        after.get("watertight_adaptive_concurrency_limit", &api),
        Some(27.0)
    );
    assert_eq!(
        after.get("watertight_adaptive_concurrency_admitted_total", &api),
        Some(1.0)
    );
    assert_eq!(
        after.get("watertight_adaptive_concurrency_in_flight", &api),
        Some(0.0)
    );
}

#[test]
fn configuration_validation_names_the_nested_field() {
    let mut config = AdaptiveConfig::default();
    let mut vegas = watertight_bulkhead::limit::VegasConfig::default();
    vegas.beta = 1;
    config.algorithm = AlgorithmConfig::Vegas(vegas);
    let err = AdaptiveConcurrencyLayer::from_config(config).unwrap_err();
    assert_eq!(err.field(), "algorithm.beta");
    assert_eq!(err.component(), "bulkhead");
    assert_eq!(
        err.to_string(),
        "invalid bulkhead configuration: `algorithm.beta` must be at least `alpha` (3), got 1"
    );

    let mut config = AdaptiveConfig::default();
    config.algorithm = AlgorithmConfig::Envoy(Default::default());
    let err = AdaptiveConcurrencyLayer::from_config(config.clone()).unwrap_err();
    assert_eq!(
        err.field(),
        "window",
        "Envoy's controller aggregates its own samples"
    );
    config.window = None;
    AdaptiveConcurrencyLayer::from_config(config).unwrap();
}

#[cfg(feature = "serde")]
#[test]
fn toml_configuration_picks_the_algorithm_and_window() {
    let config: AdaptiveConfig = toml::from_str(
        r#"
        name = "api"
        max_queue = 10
        max_wait = "50ms"
        order = "lifo"
        window = { min_window = "500ms", max_window = "2s", percentile = 0.9 }

        [algorithm]
        kind = "vegas"
        alpha = 2
        beta = 4
        "#,
    )
    .unwrap();
    let AlgorithmConfig::Vegas(v) = &config.algorithm else {
        panic!("{:?}", config.algorithm)
    };
    assert_eq!((v.alpha, v.beta, v.initial_limit), (2, 4, 20));
    let w = config.window.as_ref().unwrap();
    assert_eq!(
        (w.min_window, w.percentile),
        (Duration::from_millis(500), Some(0.9))
    );
    assert_eq!(config.max_wait, Duration::from_millis(50));

    // Envoy's controller gets no window unless asked; `false` turns it off.
    let envoy: AdaptiveConfig = toml::from_str("[algorithm]\nkind = \"envoy\"").unwrap();
    assert!(envoy.window.is_none());
    let plain: AdaptiveConfig = toml::from_str("window = false").unwrap();
    assert!(plain.window.is_none());
    assert_eq!(plain.algorithm, AlgorithmConfig::default());

    let err = toml::from_str::<AdaptiveConfig>("[algorithm]\nkind = \"aimd\"\nbackoff_ratio = 2.0")
        .unwrap_err();
    assert!(
        err.to_string().contains("`algorithm.backoff_ratio`"),
        "{err}"
    );
    let err =
        toml::from_str::<AdaptiveConfig>("[algorithm]\nkind = \"vegas\"\nalpah = 3").unwrap_err();
    assert!(err.to_string().contains("alpah"), "{err}");
    let err = toml::from_str::<AdaptiveConfig>("max_wait = \"0s\"").unwrap_err();
    assert!(err.to_string().contains("`max_wait`"), "{err}");
}

/// Three clients, each with its own default adaptive limit, share one
/// server with an unbounded FIFO queue (nothing is ever shed: only latency
/// can tell the clients to back off). They offer half its capacity for 10 s,
/// then twice its capacity for 20 s, as the overload scenario of the
/// scenario comparison does.
#[tokio::test(start_paused = true)]
async fn default_limits_of_three_clients_keep_a_shared_server_near_its_capacity() {
    let server = Server::new(C, 1 << 20, SERVICE, 5);
    let unloaded_p99 = server.unloaded_quantile(0.99);
    let clients: Vec<_> = (0..3)
        .map(|i| {
            let (layer, handle) = AdaptiveConcurrencyLayer::builder()
                .name(format!("client-{i}"))
                .build()
                .unwrap()
                .shared();
            let svc = layer.layer(server.clone()).map_err(Into::<BoxError>::into);
            (svc, handle)
        })
        .collect();
    let capacity_rps = C as f64 / 0.050;
    let rate = move |t: Duration| {
        let load = if t < Duration::from_secs(10) {
            0.5
        } else {
            2.0
        };
        load * capacity_rps / 3.0
    };
    let handles: Vec<_> = clients.iter().map(|(_, h)| h.clone()).collect();
    let runs = futures::future::join_all(clients.into_iter().map(|(svc, h)| {
        open_loop(
            svc,
            rate,
            Duration::from_secs(30),
            Duration::from_secs(10),
            move || h.limit(),
        )
    }))
    .await;
    let mut served: Vec<Duration> = runs.iter().flat_map(|r| r.served.clone()).collect();
    served.sort();
    let p99 = served[served.len() * 99 / 100];
    let total: f64 = runs.iter().map(Run::mean_limit).sum();
    println!(
        "three default clients under 2x overload: limits {:?} (total {total:.1}) for capacity {C}; \
         p99 of admitted {p99:?} (unloaded p99 {unloaded_p99:?})",
        runs.iter().map(|r| format!("{:.1}", r.mean_limit())).collect::<Vec<_>>(),
    );
    // Each Vegas keeps alpha..beta (3..6) requests queued at the server: the
    // three together hold about C + 18, and the latency stays well under
    // the 3× of the scenario comparison's target.
    assert!(
        total < 2.0 * C as f64,
        "the clients together hold {total:.1}"
    );
    assert!(p99 < unloaded_p99 * 2, "p99 {p99:?}");
    assert!(handles.iter().all(|h| h.in_flight() == 0));
}

#[test]
fn the_default_algorithm_is_windowed_vegas() {
    let c = AdaptiveConfig::default();
    assert!(matches!(c.algorithm, AlgorithmConfig::Vegas(_)));
    assert_eq!(
        c.window,
        Some(watertight_bulkhead::limit::WindowConfig::default())
    );
}
