//! The recommended client stack, end to end over in-process endpoints, in
//! paused time.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{self, BoxFuture};
use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use watertight::chaos::{Abort, Experiment, Fault};
use watertight::core::{is_caused_by, BoxError, Endpoint, EndpointId, Locality};
use watertight::discovery::Static;
use watertight::stack::{self, Client, ClientBuilder, ClientConfig};
use watertight::ServiceBuilderExt;

/// How an endpoint behaves.
#[derive(Clone, Copy)]
enum Behaviour {
    Ok,
    Unavailable,
    Hang,
}

/// Endpoints `e-1`…`e-n` in zone `a`, each answering after 10 ms as its
/// behaviour says, counting the requests it gets.
struct Fleet {
    endpoints: Vec<Endpoint>,
    behaviour: HashMap<EndpointId, Behaviour>,
    calls: Arc<HashMap<EndpointId, AtomicU32>>,
}

impl Fleet {
    fn new(behaviours: &[Behaviour]) -> Self {
        let endpoints: Vec<Endpoint> = (1..=behaviours.len())
            .map(|i| {
                Endpoint::new(format!("10.0.0.{i}:80").parse().unwrap())
                    .with_id(format!("e-{i}"))
                    .with_locality(Locality::zone("a"))
            })
            .collect();
        let behaviour = endpoints
            .iter()
            .zip(behaviours)
            .map(|(e, b)| (e.id.clone(), *b))
            .collect();
        let calls = Arc::new(
            endpoints
                .iter()
                .map(|e| (e.id.clone(), AtomicU32::new(0)))
                .collect(),
        );
        Fleet {
            endpoints,
            behaviour,
            calls,
        }
    }

    fn calls(&self, id: &str) -> u32 {
        self.calls[&EndpointId::from(id)].load(Relaxed)
    }

    fn client(&self, config: ClientConfig) -> Client<(), ()> {
        let behaviour = self.behaviour.clone();
        let calls = self.calls.clone();
        stack::client(
            config,
            Static::new(self.endpoints.clone()),
            move |e: &Endpoint| {
                let b = behaviour[&e.id];
                let calls = calls.clone();
                let id = e.id.clone();
                service_fn(
                    move |_: Request<()>| -> BoxFuture<'static, Result<Response<()>, Infallible>> {
                        calls[&id].fetch_add(1, Relaxed);
                        match b {
                            Behaviour::Hang => Box::pin(future::pending()),
                            b => Box::pin(async move {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                let mut res = Response::new(());
                                if matches!(b, Behaviour::Unavailable) {
                                    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                                }
                                Ok(res)
                            }),
                        }
                    },
                )
            },
        )
        .expect("valid configuration")
    }
}

fn config() -> ClientConfig {
    ClientConfig::default()
        .per_try_timeout(Duration::from_millis(250))
        .seed(7)
}

/// Sends `n` requests, one every `every`, and waits for all of them.
async fn send(
    client: &Client<(), ()>,
    n: usize,
    every: Duration,
) -> Vec<Result<Response<()>, BoxError>> {
    let mut calls = Vec::new();
    for _ in 0..n {
        calls.push(tokio::spawn(client.clone().oneshot(Request::new(()))));
        tokio::time::sleep(every).await;
    }
    let mut out = Vec::new();
    for c in calls {
        out.push(c.await.expect("the call task completes"));
    }
    out
}

fn ok(results: &[Result<Response<()>, BoxError>]) -> usize {
    results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|res| res.status() == StatusCode::OK))
        .count()
}

#[tokio::test(start_paused = true)]
async fn defaults_serve_requests_and_expose_every_layer() {
    let fleet = Fleet::new(&[Behaviour::Ok; 3]);
    let client = fleet.client(config());
    let results = send(&client, 30, Duration::from_millis(5)).await;
    assert_eq!(ok(&results), 30);
    let h = client.handles();
    assert_eq!(h.retry.snapshot().requests, 30);
    assert_eq!(h.retry.snapshot().retries, 0);
    assert_eq!(h.balancer.snapshot().endpoints, 3);
    assert_eq!(h.concurrency.as_ref().map(|c| c.in_flight()), Some(0));
    assert!(h.admission.is_some());
    assert_eq!(h.retry.name(), "client");
    let breakers = h
        .breakers
        .as_ref()
        .expect("the stack has per-endpoint breakers");
    assert_eq!((breakers.members(), breakers.open()), (3, 0));
}

#[tokio::test(start_paused = true)]
async fn a_failing_endpoint_is_retried_elsewhere_and_ejected() {
    let fleet = Fleet::new(&[Behaviour::Unavailable, Behaviour::Ok, Behaviour::Ok]);
    let client = fleet.client(config());
    let results = send(&client, 200, Duration::from_millis(5)).await;
    assert_eq!(
        ok(&results),
        200,
        "every 503 was retried on another endpoint"
    );
    // PeakEWMA counts a failure as a slow answer, and outlier detection
    // ejects after five in a row: the failing endpoint gets a handful.
    let failed = fleet.calls("e-1");
    assert!((1..=5).contains(&failed), "{failed}");
    assert_eq!(client.handles().retry.snapshot().retries, u64::from(failed));
}

#[tokio::test(start_paused = true)]
async fn a_hung_endpoint_is_skipped_once_it_holds_its_limit() {
    let fleet = Fleet::new(&[Behaviour::Hang, Behaviour::Ok, Behaviour::Ok]);
    // Round robin: no load-aware pick steers around the hung endpoint.
    let mut config = config();
    config.balancer.pick = watertight::loadbalance::Pick::RoundRobin;
    let client = fleet.client(config);
    let start = Instant::now();
    let mut calls = Vec::new();
    for _ in 0..100 {
        calls.push(tokio::spawn(client.clone().oneshot(Request::new(()))));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // 200 ms in, before the first hung request times out: the endpoint
    // took its limit of 10 and nothing since.
    assert_eq!(fleet.calls("e-1"), 10);
    for c in calls {
        let res = c.await.unwrap().unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    // The hung ones were retried elsewhere after the per-try timeout; the
    // slots they freed took a few more until outlier detection ejected it.
    assert!(fleet.calls("e-1") <= 15, "{}", fleet.calls("e-1"));
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn faults_from_the_chaos_controller_reach_the_endpoints() {
    let fleet = Fleet::new(&[Behaviour::Ok; 3]);
    let client = fleet.client(config());
    let chaos = client.handles().chaos.clone();
    chaos
        .start(
            Experiment::builder("every-endpoint-down")
                .duration(Duration::from_secs(60))
                .fault(Fault::Abort(Abort::Error), 100.0)
                .build()
                .unwrap(),
        )
        .unwrap();
    let results = send(&client, 5, Duration::from_millis(5)).await;
    assert_eq!(ok(&results), 0);
    let err = results.into_iter().next().unwrap().unwrap_err();
    assert!(
        is_caused_by::<watertight::chaos::error::Injected>(&*err),
        "{err}"
    );

    chaos.halt_all();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let results = send(&client, 5, Duration::from_millis(5)).await;
    assert_eq!(ok(&results), 5);
}

#[tokio::test(start_paused = true)]
async fn the_concurrency_limit_refuses_at_once_instead_of_queueing() {
    let fleet = Fleet::new(&[Behaviour::Hang; 9]);
    let mut config = config();
    config.endpoint_limit = None;
    config.concurrency.as_mut().unwrap().algorithm =
        watertight::bulkhead::AlgorithmConfig::Vegas({
            let mut v = watertight::bulkhead::limit::VegasConfig::default();
            v.initial_limit = 5;
            v
        });
    let client = fleet.client(config);
    let calls: Vec<_> = (0..6)
        .map(|_| tokio::spawn(client.clone().oneshot(Request::new(()))))
        .collect();
    tokio::task::yield_now().await;
    let sixth = calls
        .into_iter()
        .last()
        .unwrap()
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        is_caused_by::<watertight::bulkhead::error::Full>(&*sixth),
        "{sixth}"
    );
}

#[tokio::test(start_paused = true)]
async fn zone_aware_routing_keeps_requests_in_the_local_zone() {
    let at = |i: u32, zone: &str| {
        Endpoint::new(format!("10.0.{i}.1:80").parse().unwrap())
            .with_id(format!("{zone}-{i}"))
            .with_locality(Locality::zone(zone))
    };
    let upstream: Vec<_> = (1..=6).map(|i| at(i, ["a", "b"][i as usize % 2])).collect();
    let clients = vec![at(10, "a"), at(11, "b")];
    let served = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let log = served.clone();
    let client = ClientBuilder::new(config().locality(Locality::zone("a")))
        .local_cluster(Static::new(clients))
        .build(Static::new(upstream), move |e: &Endpoint| {
            let zone = e.locality.zone.clone();
            let log = log.clone();
            service_fn(move |_: Request<()>| {
                log.lock().push(zone.clone());
                future::ready(Ok::<_, Infallible>(Response::new(())))
            })
        })
        .unwrap();
    let results = send(&client, 50, Duration::from_millis(1)).await;
    assert_eq!(ok(&results), 50);
    assert!(
        served.lock().iter().all(|z| z == "a"),
        "{:?}",
        served.lock()
    );
}

#[test]
fn a_local_cluster_without_a_locality_is_a_typed_error() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let err = ClientBuilder::new(ClientConfig::default())
        .local_cluster(Static::new(Vec::new()))
        .build(Static::new(Vec::new()), |_: &Endpoint| {
            service_fn(|_: Request<()>| future::ready(Ok::<_, Infallible>(Response::new(()))))
        })
        .unwrap_err();
    assert_eq!(err.field(), "local_cluster");
}

#[test]
fn the_configuration_reads_from_toml_with_a_table_per_layer() {
    let config: ClientConfig = toml::from_str(
        r#"
        name = "inventory"
        per_try_timeout = "250ms"
        admission = false
        breaker = true

        [balancer]
        local_locality = { region = "eu-west-1", zone = "eu-west-1a" }

        [retry]
        max_attempts = 2
        timeout = "2s"

        [endpoint_limit]
        max_concurrent = 32
        "#,
    )
    .unwrap();
    assert_eq!(config.name, "inventory");
    assert_eq!(config.per_try_timeout, Duration::from_millis(250));
    assert_eq!(config.admission, None);
    assert_eq!(config.breaker, Some(ClientConfig::default_breaker()));
    assert_eq!(config.retry.max_attempts, 2);
    assert_eq!(config.retry.timeout, Some(Duration::from_secs(2)));
    assert_eq!(config.endpoint_limit.as_ref().unwrap().max_concurrent, 32);
    assert_eq!(
        config.balancer.local_locality,
        Some(Locality::new("eu-west-1", "eu-west-1a"))
    );
    // Fields not given keep the stack's defaults.
    assert_eq!(config.concurrency, ClientConfig::default().concurrency);
    config.validate().unwrap();
}

#[test]
fn a_layer_table_starts_from_the_stacks_default_for_that_layer() {
    let config: ClientConfig = toml::from_str(
        r#"
        [retry]
        max_attempts = 2

        [balancer.outlier_detection]
        interval = "5s"
        "#,
    )
    .unwrap();
    let defaults = ClientConfig::default();
    assert_eq!(config.retry.max_attempts, 2);
    // The stack's budget and deadline, not the retry crate's.
    assert_eq!(config.retry.budget, defaults.retry.budget);
    assert_eq!(config.retry.timeout, Some(Duration::from_secs(10)));
    let od = config.balancer.outlier_detection.unwrap();
    assert_eq!(od.interval, Duration::from_secs(5));
    assert_eq!(od.max_ejection_percent, 34.0);

    // Another kind of budget replaces the default's whole.
    let config: ClientConfig =
        toml::from_str("[retry]\nbudget = { kind = \"ratio\", ratio = 0.1 }").unwrap();
    match config.retry.budget {
        watertight::retry::budget::BudgetConfig::Ratio { ratio, .. } => assert_eq!(ratio, 0.1),
        other => panic!("{other:?}"),
    }

    // What serializes reads back the same.
    let text = toml::to_string(&ClientConfig::default()).unwrap();
    assert_eq!(
        toml::from_str::<ClientConfig>(&text).unwrap(),
        ClientConfig::default()
    );
}

#[test]
fn bad_configuration_names_the_field() {
    let unknown = toml::from_str::<ClientConfig>("retries = 3").unwrap_err();
    assert!(unknown.to_string().contains("retries"), "{unknown}");
    let nested = toml::from_str::<ClientConfig>("[retry]\nmax_attempts = 0").unwrap_err();
    assert!(nested.to_string().contains("max_attempts"), "{nested}");
    let stack = toml::from_str::<ClientConfig>("buffer = 0").unwrap_err();
    assert!(stack.to_string().contains("`buffer`"), "{stack}");

    let mut config = ClientConfig::default();
    config.breaker_slow_call_share = 0.0;
    assert_eq!(
        config.validate().unwrap_err().field(),
        "breaker_slow_call_share"
    );
    let mut config = ClientConfig::default();
    config.breaker_max_open_percent = 120.0;
    assert_eq!(
        config.validate().unwrap_err().field(),
        "breaker_max_open_percent"
    );
    let mut config = ClientConfig::default();
    config.endpoint_limit.as_mut().unwrap().max_concurrent = 0;
    let err = config.validate().unwrap_err();
    assert_eq!(err.field(), "endpoint_limit.max_concurrent");
    assert!(
        err.to_string().contains("endpoint_limit.max_concurrent"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn service_builder_ext_adds_each_layer_by_name() {
    let failures = Arc::new(AtomicU32::new(0));
    let seen = failures.clone();
    let mut svc = ServiceBuilder::new()
        .adaptive_concurrency(
            watertight::bulkhead::AdaptiveConcurrencyLayer::builder()
                .build()
                .unwrap(),
        )
        .budgeted_retry(
            watertight::retry::RetryLayer::builder()
                .idempotency(watertight::retry::policy::AllRequests)
                .build()
                .unwrap(),
        )
        .circuit_breaker(
            watertight::circuit_breaker::CircuitBreakerLayer::builder()
                .build()
                .unwrap(),
        )
        .bulkhead(
            watertight::bulkhead::BulkheadLayer::builder()
                .build()
                .unwrap(),
        )
        .service_fn(move |_: Request<()>| {
            let first = seen.fetch_add(1, Relaxed) == 0;
            future::ready(if first {
                Err::<Response<()>, BoxError>("connection reset".into())
            } else {
                Ok(Response::new(()))
            })
        });
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(failures.load(Relaxed), 2, "the retry layer sent it again");
}
