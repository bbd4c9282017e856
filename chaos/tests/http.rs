//! The chaos layer on `http` services: aborts as responses, gRPC aborts,
//! body throttling and truncation, header-triggered faults, and all of it
//! over a real socket.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use bytes::Bytes;
use futures::stream;
use http::{Request, Response, StatusCode};
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use watertight_chaos::error::Injected;
use watertight_chaos::{headers, Abort, ChaosBody, ChaosController, Fault, HeaderFaults, Target};
use watertight_core::{find_cause, BoxError};

use support::*;

type Body = Full<Bytes>;

/// A service answering `size` bytes `0, 1, 2, …` (mod 251), counting its
/// calls.
fn bytes_service(
    size: usize,
    calls: Arc<AtomicUsize>,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone
{
    tower::service_fn(move |_req: Request<Body>| {
        calls.fetch_add(1, Ordering::Relaxed);
        let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
            body,
        )))))
    })
}

async fn send<S, B>(svc: &mut S, req: Request<Body>) -> Result<Response<ChaosBody<B>>, BoxError>
where
    S: Service<Request<Body>, Response = Response<ChaosBody<B>>, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::default()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn http_abort_answers_the_status_without_calling_the_service() {
    let chaos = controller();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = chaos.http_layer().layer(bytes_service(10, calls.clone()));
    chaos
        .start(experiment(
            "abort-503",
            60,
            Fault::Abort(Abort::Http(503)),
            100.0,
            Target::all().path_prefix("/api"),
        ))
        .unwrap();
    let res = send(&mut svc, get("/api/x")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.body().is_end_stream());
    assert_eq!(calls.load(Ordering::Relaxed), 0);
    let res = send(&mut svc, get("/other")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes().len(),
        10
    );
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn grpc_abort_is_a_trailers_only_response() {
    let chaos = controller();
    let mut svc = chaos.http_layer().layer(bytes_service(10, Arc::default()));
    chaos
        .start(experiment(
            "grpc-unavailable",
            60,
            Fault::Abort(Abort::Grpc(14)),
            100.0,
            Target::all().method("POST"),
        ))
        .unwrap();
    let req = Request::post("/pkg.Svc/Method")
        .body(Body::default())
        .unwrap();
    let res = send(&mut svc, req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/grpc");
    assert_eq!(res.headers()["grpc-status"], "14");
    assert!(res.headers().contains_key("grpc-message"));
    let collected = res.into_body().collect().await.unwrap();
    assert!(collected.trailers().is_none());
    assert!(collected.to_bytes().is_empty());
}

#[tokio::test(start_paused = true)]
async fn abort_without_a_status_is_an_injected_error() {
    let chaos = controller();
    let mut svc = chaos.http_layer().layer(bytes_service(10, Arc::default()));
    chaos
        .start(always("err", 60, Fault::Abort(Abort::Error)))
        .unwrap();
    let err = send(&mut svc, get("/")).await.unwrap_err();
    assert_eq!(
        find_cause::<Injected>(&*err).unwrap().experiment(),
        Some("err")
    );
}

/// A body of `frames` frames of `size` bytes each, `0, 1, 2, …`.
fn framed(
    frames: usize,
    size: usize,
) -> (
    StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>>>,
    Vec<u8>,
) {
    let all: Vec<u8> = (0..frames * size).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = all
        .chunks(size)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    (StreamBody::new(stream::iter(chunks)), all)
}

/// A service answering `body` to its one call.
fn answering_once<B>(
    body: B,
) -> impl Service<Request<Body>, Response = Response<B>, Error = Infallible> {
    let mut body = Some(body);
    tower::service_fn(move |_req: Request<Body>| {
        let b = body.take().expect("one call");
        std::future::ready(Ok(Response::new(b)))
    })
}

#[tokio::test(start_paused = true)]
async fn throttle_releases_bytes_at_the_rate() {
    let chaos = controller();
    let (body, expected) = framed(10, 1000);
    let mut svc = chaos.http_layer().layer(answering_once(body));
    chaos
        .start(always(
            "slow-body",
            60,
            Fault::Throttle {
                bytes_per_second: 2000,
            },
        ))
        .unwrap();
    let res = svc.ready().await.unwrap().call(get("/")).await.unwrap();
    let mut body = res.into_body();
    let start = Instant::now();
    let mut received = Vec::new();
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        received.extend_from_slice(&data);
        let elapsed = start.elapsed().as_secs_f64();
        // Never more than the rate allows since the first poll.
        assert!(
            received.len() as f64 <= 2000.0 * elapsed + 1e-6,
            "{} bytes after {elapsed}s",
            received.len()
        );
        assert!(data.len() <= 200, "pieces are a tenth of a second's worth");
    }
    assert_eq!(received, expected, "every byte, in order");
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(5),
        "10,000 bytes at 2,000 B/s"
    );
    assert_eq!(chaos.active_faults(), 1, "the body holds the fault's slot");
    drop(body);
    assert_eq!(chaos.active_faults(), 0, "the body gave its slot back");
}

#[tokio::test(start_paused = true)]
async fn truncate_ends_the_body_after_n_bytes() {
    let chaos = controller();
    let mut svc = chaos
        .http_layer()
        .layer(bytes_service(1000, Arc::default()));
    chaos
        .start(always("cut", 60, Fault::Truncate { after_bytes: 123 }))
        .unwrap();
    let res = send(&mut svc, get("/")).await.unwrap();
    assert_eq!(res.body().size_hint().upper(), Some(123));
    assert_eq!(chaos.active_faults(), 1, "the body holds the fault's slot");
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes.len(), 123);
    assert!(bytes.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    assert_eq!(chaos.active_faults(), 0);
}

#[tokio::test(start_paused = true)]
async fn truncate_across_frames_and_to_zero() {
    let chaos = controller();
    let (body, expected) = framed(5, 100);
    let mut svc = chaos.http_layer().layer(answering_once(body));
    chaos
        .start(always("cut-250", 60, Fault::Truncate { after_bytes: 250 }))
        .unwrap();
    let res = svc.ready().await.unwrap().call(get("/")).await.unwrap();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&bytes[..], &expected[..250]);

    chaos.halt_all();
    chaos
        .start(always("cut-0", 60, Fault::Truncate { after_bytes: 0 }))
        .unwrap();
    let mut svc = chaos.http_layer().layer(bytes_service(10, Arc::default()));
    let res = send(&mut svc, get("/")).await.unwrap();
    assert!(res.body().is_end_stream());
    assert!(res
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .is_empty());
}

#[tokio::test(start_paused = true)]
async fn header_faults_are_off_unless_enabled() {
    let chaos = controller();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = chaos.http_layer().layer(bytes_service(10, calls.clone()));
    let req = || {
        Request::get("/")
            .header(headers::ABORT, "503")
            .header(headers::DELAY_MS, "100")
            .body(Body::default())
            .unwrap()
    };
    let start = Instant::now();
    assert_eq!(
        send(&mut svc, req()).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(start.elapsed(), Duration::ZERO);

    chaos.enable_header_faults(HeaderFaults::new());
    let start = Instant::now();
    assert_eq!(
        send(&mut svc, req()).await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(100),
        "delayed, then aborted"
    );
    assert_eq!(calls.load(Ordering::Relaxed), 1);

    chaos.halt_all();
    assert_eq!(
        send(&mut svc, req()).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn header_faults_cap_delays_and_honour_percentages() {
    let chaos = ChaosController::builder()
        .seed(9)
        .header_faults(HeaderFaults::new().max_delay(Duration::from_secs(1)))
        .build()
        .unwrap();
    let mut svc = chaos
        .http_layer()
        .layer(bytes_service(1000, Arc::default()));
    let start = Instant::now();
    let req = Request::get("/")
        .header(headers::DELAY_MS, "60000")
        .header(headers::TRUNCATE_BYTES, "7")
        .body(Body::default())
        .unwrap();
    let res = send(&mut svc, req).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "capped at max_delay"
    );
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes().len(), 7);

    let mut aborted = 0;
    for _ in 0..2000 {
        let req = Request::get("/")
            .header(headers::ABORT, "500")
            .header(headers::ABORT_PERCENT, "25")
            .body(Body::default())
            .unwrap();
        if send(&mut svc, req).await.unwrap().status() == 500 {
            aborted += 1;
        }
    }
    // Binomial(2000, 0.25): σ ≈ 19.
    assert!((405..=595).contains(&aborted), "{aborted}");
    // Garbage is ignored.
    let req = Request::get("/")
        .header(headers::ABORT, "lots")
        .header(headers::DELAY_MS, "-5")
        .body(Body::default())
        .unwrap();
    assert_eq!(send(&mut svc, req).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn header_faults_abort_with_grpc_statuses_throttle_and_honour_delay_percentages() {
    let chaos = ChaosController::builder()
        .seed(9)
        .header_faults(HeaderFaults::new())
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = chaos.http_layer().layer(bytes_service(1000, calls.clone()));
    let req = Request::post("/pkg.Svc/Method")
        .header(headers::ABORT_GRPC, "14")
        .body(Body::default())
        .unwrap();
    let res = send(&mut svc, req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["grpc-status"], "14");
    assert_eq!(calls.load(Ordering::Relaxed), 0);

    let req = Request::get("/")
        .header(headers::THROTTLE_BPS, "500")
        .body(Body::default())
        .unwrap();
    let start = Instant::now();
    let res = send(&mut svc, req).await.unwrap();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes.len(), 1000);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(2),
        "1,000 bytes at 500 B/s"
    );

    let delayed = |percent: &'static str| {
        Request::get("/")
            .header(headers::DELAY_MS, "100")
            .header(headers::DELAY_PERCENT, percent)
            .body(Body::default())
            .unwrap()
    };
    let start = Instant::now();
    send(&mut svc, delayed("0")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO, "0% is never delayed");
    send(&mut svc, delayed("100")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn header_faults_count_against_max_active_faults() {
    let chaos = ChaosController::builder()
        .seed(9)
        .max_active_faults(1)
        .header_faults(HeaderFaults::new())
        .build()
        .unwrap();
    let svc = chaos.http_layer().layer(bytes_service(10, Arc::default()));
    let slow = || {
        Request::get("/")
            .header(headers::DELAY_MS, "1000")
            .body(Body::default())
            .unwrap()
    };
    let start = Instant::now();
    let calls = (0..3).map(|_| {
        let mut svc = svc.clone();
        let req = slow();
        async move {
            svc.ready().await.unwrap().call(req).await.unwrap();
            start.elapsed()
        }
    });
    let mut times = futures::future::join_all(calls).await;
    times.sort();
    assert_eq!(
        times,
        [Duration::ZERO, Duration::ZERO, Duration::from_secs(1)]
    );
}

async fn handle_error(err: BoxError) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
}

#[tokio::test]
async fn faults_over_a_real_socket() {
    let chaos = ChaosController::builder()
        .name("server")
        .header_faults(HeaderFaults::new())
        .build()
        .unwrap();
    let payload: Vec<u8> = (0..10_000).map(|i| (i % 251) as u8).collect();
    let body = payload.clone();
    let app = axum::Router::new()
        .route(
            "/data",
            axum::routing::get(move || {
                let body = body.clone();
                async move { body }
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(handle_error))
                .layer(chaos.http_layer()),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Body>();
    let url = format!("http://{addr}/data");
    let fetch = |req: Request<Body>| {
        let client = client.clone();
        async move {
            let res = client.request(req).await.unwrap();
            let status = res.status();
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            (status, bytes)
        }
    };
    let work = async {
        let (status, bytes) = fetch(Request::get(&url).body(Body::default()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&bytes[..], &payload[..]);

        chaos
            .start(experiment(
                "cut",
                60,
                Fault::Truncate { after_bytes: 1000 },
                100.0,
                Target::all().path_prefix("/data"),
            ))
            .unwrap();
        let (status, bytes) = fetch(Request::get(&url).body(Body::default()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&bytes[..], &payload[..1000], "truncated on the wire");
        chaos.stop("cut").unwrap();

        let req = Request::get(&url)
            .header(headers::ABORT, "429")
            .body(Body::default())
            .unwrap();
        let (status, bytes) = fetch(req).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(bytes.is_empty());

        chaos
            .start(always("err", 60, Fault::Abort(Abort::Error)))
            .unwrap();
        let (status, bytes) = fetch(Request::get(&url).body(Body::default()).unwrap()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(String::from_utf8_lossy(&bytes).contains("fault injected by experiment `err`"));
    };
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .expect("the real-socket exchange finishes in time");
    server.abort();
}
