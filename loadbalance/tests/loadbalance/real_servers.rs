//! Real axum servers on loopback, found through a `Static` discovery
//! source, each behind a circuit breaker in `Backpressure` mode: a server
//! that starts answering 503 loses its traffic after the breaker's
//! consecutive-failure threshold, and gets it back once it recovers and
//! the breaker's probe succeeds. Real time, bounded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, Service, ServiceExt};
use watertight_circuit_breaker::{CircuitBreakerLayer, Mode};
use watertight_core::classify::ServerErrorsAsFailures;
use watertight_core::{BoxError, Endpoint};
use watertight_discovery::Static;
use watertight_loadbalance::Builder;

/// Consecutive failures that open a breaker.
const TRIP: u32 = 3;

async fn server(name: &'static str, failing: Arc<AtomicBool>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let failing = failing.clone();
            async move {
                if failing.load(SeqCst) {
                    (StatusCode::SERVICE_UNAVAILABLE, name)
                } else {
                    (StatusCode::OK, name)
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn send<S>(lb: &mut S) -> (StatusCode, String)
where
    S: Service<Request<()>, Response = Response<String>, Error = BoxError>,
{
    let res = lb
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    (res.status(), res.into_body())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_server_loses_traffic_to_its_breaker_and_regains_it() {
    tokio::time::timeout(Duration::from_secs(30), scenario())
        .await
        .expect("finishes in bounded time");
}

async fn scenario() {
    let names = ["one", "two", "three"];
    let failing: Vec<Arc<AtomicBool>> = names.iter().map(|_| Arc::default()).collect();
    let mut endpoints = Vec::new();
    for (name, flag) in names.iter().zip(&failing) {
        let addr = server(name, flag.clone()).await;
        endpoints.push(Endpoint::new(addr.into()).with_id(*name));
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let breaker = CircuitBreakerLayer::builder()
        .mode(Mode::Backpressure)
        .consecutive_failures(TRIP)
        .disable_failure_rate()
        .open_duration(Duration::from_millis(300))
        .classify(ServerErrorsAsFailures)
        .build()
        .unwrap();
    let mut lb = Builder::new()
        .name("real")
        .round_robin()
        .no_outlier_detection()
        .classify(ServerErrorsAsFailures)
        .seed(1)
        .build(Static::new(endpoints), move |e: &Endpoint| {
            let client = client.clone();
            let uri: http::Uri = format!("http://{}/", e.addr).parse().unwrap();
            breaker.layer(tower::service_fn(move |req: Request<()>| {
                let client = client.clone();
                let uri = uri.clone();
                async move {
                    let (parts, ()) = req.into_parts();
                    let mut req = Request::from_parts(parts, Empty::new());
                    *req.uri_mut() = uri;
                    let res = client.request(req).await?;
                    let (parts, body) = res.into_parts();
                    let body = body.collect().await?.to_bytes();
                    Ok::<_, BoxError>(Response::from_parts(
                        parts,
                        String::from_utf8_lossy(&body).into_owned(),
                    ))
                }
            }))
        })
        .unwrap();

    let mut served = BTreeMap::<String, usize>::new();
    for _ in 0..30 {
        let (status, name) = send(&mut lb).await;
        assert_eq!(status, StatusCode::OK);
        *served.entry(name).or_default() += 1;
    }
    assert_eq!(served.values().copied().collect::<Vec<_>>(), [10, 10, 10]);

    // Server "two" starts failing: it answers exactly TRIP requests with 503
    // before its breaker opens and takes it out of the rotation.
    failing[1].store(true, SeqCst);
    let mut failures = 0;
    let mut after = BTreeMap::<String, usize>::new();
    for _ in 0..90 {
        let (status, name) = send(&mut lb).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(name, "two");
            failures += 1;
        } else {
            *after.entry(name).or_default() += 1;
        }
    }
    assert_eq!(failures, TRIP);
    assert!(!after.contains_key("two"), "{after:?}");

    // It recovers: once the breaker's open duration passes, a probe goes to
    // it, succeeds, and it is back in the rotation.
    failing[1].store(false, SeqCst);
    let back = async {
        loop {
            let (status, name) = send(&mut lb).await;
            assert_eq!(status, StatusCode::OK);
            if name == "two" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), back)
        .await
        .expect("the recovered server gets traffic again");
    let mut last = BTreeMap::<String, usize>::new();
    for _ in 0..60 {
        let (status, name) = send(&mut lb).await;
        assert_eq!(status, StatusCode::OK);
        *last.entry(name).or_default() += 1;
    }
    assert_eq!(last.get("two"), Some(&20), "{last:?}");
}
