//! A real axum server on loopback behind an adaptive concurrency limit:
//! under a burst it sheds with `503` and `Retry-After`.
#![cfg(feature = "axum")]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::routing::get;
use axum::Router;
use http::header::RETRY_AFTER;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use watertight_bulkhead::http::ErrorResponse;
use watertight_bulkhead::limit::{Gradient2, Gradient2Config, WindowConfig, Windowed};
use watertight_bulkhead::AdaptiveConcurrencyLayer;
use watertight_core::BoxError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_limit_sheds_a_burst_with_503_and_retry_after_on_loopback() {
    // The application works on 4 requests at once, 20 ms each; the rest
    // queue in front of it.
    let workers = Arc::new(Semaphore::new(4));
    let handler = move || {
        let workers = workers.clone();
        async move {
            let _worker = workers.acquire().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            "served"
        }
    };
    let mut gradient = Gradient2Config::default();
    gradient.initial_limit = 8;
    gradient.min_limit = 4;
    let mut window = WindowConfig::default();
    window.min_window = Duration::from_millis(100);
    window.max_window = Duration::from_millis(100);
    let (limit, handle) = AdaptiveConcurrencyLayer::builder()
        .name("api")
        .algorithm(Windowed::new(Gradient2::new(gradient).unwrap(), window).unwrap())
        .retry_after(Duration::from_secs(2))
        .build()
        .unwrap()
        .shared();
    let app = Router::new().route("/", get(handler)).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|err: BoxError| async move {
                ErrorResponse::from(err)
            }))
            .layer(limit),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
    let burst = |n: usize| {
        let (client, uri) = (client.clone(), uri.clone());
        async move {
            let calls = (0..n).map(|_| {
                let (client, uri) = (client.clone(), uri.clone());
                tokio::spawn(async move {
                    let res = client.get(uri).await.unwrap();
                    let status = res.status();
                    let retry_after = res.headers().get(RETRY_AFTER).cloned();
                    let body = res.into_body().collect().await.unwrap().to_bytes();
                    (status, retry_after, body)
                })
            });
            futures::future::join_all(calls)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        }
    };

    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        let mut all = Vec::new();
        for _ in 0..5 {
            all.extend(burst(64).await);
        }
        all
    })
    .await
    .expect("the test is bounded");

    let served = outcome
        .iter()
        .filter(|(s, _, body)| *s == StatusCode::OK && body == "served")
        .count();
    let shed: Vec<_> = outcome
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(served > 0, "nothing served");
    assert!(!shed.is_empty(), "nothing shed");
    assert_eq!(served + shed.len(), outcome.len(), "only 200s and 503s");
    for (_, retry_after, body) in &shed {
        assert_eq!(retry_after.as_ref().unwrap(), "2");
        assert!(
            std::str::from_utf8(body)
                .unwrap()
                .starts_with("bulkhead is full"),
            "{body:?}"
        );
    }
    let snap = handle.snapshot();
    assert_eq!(snap.rejected as usize, shed.len());
    assert_eq!(snap.in_flight, 0);
    server.abort();
}
