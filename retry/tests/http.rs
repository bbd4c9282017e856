//! HTTP: the default policy on `http` messages, `ReplayBody`, the deadline
//! header layers, and a real hyper client retrying against a real axum
//! server on loopback.
#![cfg(feature = "http")]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use futures::stream;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_test::mock;
use watertight_core::BoxError;
use watertight_retry::deadline::{
    format_grpc_timeout, Deadline, DeadlineHeader, PropagateDeadlineLayer, ServerDeadlineLayer,
};
use watertight_retry::policy::RetrySafe;
use watertight_retry::replay::{ReplayBody, ReplayUnavailable};
use watertight_retry::{Reason, RetriesExhausted, RetryLayer, StandardPolicy};

const MS: Duration = Duration::from_millis(1);

fn chunks(sizes: &[usize]) -> Vec<Bytes> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, n)| Bytes::from(vec![b'a' + (i % 26) as u8; *n]))
        .collect()
}

type Chunks = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn streamed(parts: &[Bytes]) -> Chunks {
    let frames: Vec<_> = parts.iter().cloned().map(|b| Ok(Frame::data(b))).collect();
    StreamBody::new(stream::iter(frames))
}

fn concat(parts: &[Bytes]) -> Bytes {
    parts.concat().into()
}

async fn next_data<B: Body<Data = Bytes> + Unpin>(body: &mut B) -> Option<Bytes>
where
    B::Error: std::fmt::Debug,
{
    body.frame().await.map(|f| f.unwrap().into_data().unwrap())
}

#[tokio::test]
async fn replay_body_replays_what_streamed_then_continues_the_source() {
    let parts = chunks(&[3, 4, 5]);
    let mut first = ReplayBody::new(streamed(&parts));
    let second = first.try_clone().unwrap();
    // The first attempt stops after two chunks (the server answered early).
    assert_eq!(next_data(&mut first).await.unwrap(), parts[0]);
    assert_eq!(next_data(&mut first).await.unwrap(), parts[1]);
    drop(first);
    // The retry sends the two kept chunks, then reads on from the source.
    let all = second.collect().await.unwrap().to_bytes();
    assert_eq!(all, concat(&parts));
}

#[tokio::test]
async fn replay_body_keeps_trailers_and_exact_sizes() {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"hello"))),
        Ok(Frame::trailers(trailers.clone())),
    ];
    let body = ReplayBody::new(StreamBody::new(stream::iter(frames)));
    let copy = body.try_clone().unwrap();
    let got = body.collect().await.unwrap();
    assert_eq!(got.trailers(), Some(&trailers));
    assert_eq!(copy.size_hint().exact(), Some(5));
    let again = copy.collect().await.unwrap();
    assert_eq!(again.trailers(), Some(&trailers));
    assert_eq!(again.to_bytes(), Bytes::from_static(b"hello"));

    let full = ReplayBody::new(Full::new(Bytes::from_static(b"0123456789")));
    assert_eq!(full.size_hint().exact(), Some(10));
    let copy = full.try_clone().unwrap();
    assert_eq!(copy.size_hint().exact(), Some(10));
    assert!(!copy.is_end_stream());
}

#[tokio::test]
async fn replay_body_over_its_limit_cannot_be_copied() {
    // Announced as larger than the limit: never kept.
    let big = ReplayBody::with_limit(Full::new(Bytes::from(vec![0u8; 20])), 10);
    assert!(big.try_clone().is_none());
    assert_eq!(big.collect().await.unwrap().to_bytes().len(), 20);

    // Streamed past the limit: the copy made before fails, none after.
    let parts = chunks(&[6, 6]);
    let mut body = ReplayBody::with_limit(streamed(&parts), 10);
    let mut early = body.try_clone().unwrap();
    assert_eq!(next_data(&mut body).await.unwrap(), parts[0]);
    assert!(body.try_clone().is_some());
    assert_eq!(next_data(&mut body).await.unwrap(), parts[1]);
    assert!(body.is_capped());
    assert!(body.try_clone().is_none());
    let err = early.frame().await.unwrap().unwrap_err();
    assert_eq!(
        err.downcast_ref::<ReplayUnavailable>(),
        Some(&ReplayUnavailable::Overflowed)
    );
}

#[tokio::test(start_paused = true)]
async fn http_defaults_retry_get_but_not_post() {
    let layer = RetryLayer::builder()
        .classify(watertight_core::classify::ServerErrorsAsFailures)
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<Request<&'static str>, Response<()>, _>(layer);
    handle.allow(100);

    assert_ready_ok!(svc.poll_ready());
    let post = Request::post("/orders").body("{}").unwrap();
    let call = tokio::spawn(svc.call(post));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(status(503));
    let res = call.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.extensions().get::<RetriesExhausted>().map(|m| m.reason),
        Some(Reason::NotIdempotent)
    );
    assert_pending!(handle.poll_request());

    for method in [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
    ] {
        assert_ready_ok!(svc.poll_ready());
        let req = Request::builder()
            .method(method.clone())
            .uri("/")
            .body("")
            .unwrap();
        let call = tokio::spawn(svc.call(req));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(status(502));
        let (again, send) = handle.next_request().await.unwrap();
        assert_eq!(again.method(), method);
        send.send_response(status(200));
        assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);
    }
}

fn status(code: u16) -> Response<()> {
    Response::builder().status(code).body(()).unwrap()
}

fn with_header(code: u16, name: &'static str, value: &'static str) -> Response<()> {
    Response::builder()
        .status(code)
        .header(name, value)
        .body(())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn retry_after_and_grpc_pushback_headers_are_honoured_and_bounded() {
    let layer = RetryLayer::builder()
        .classify(watertight_core::classify::ServerErrorsAsFailures)
        .max_attempts(5)
        .max_server_delay(Duration::from_secs(10))
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<Request<&'static str>, Response<()>, _>(layer);
    handle.allow(10);
    assert_ready_ok!(svc.poll_ready());
    let call = tokio::spawn(svc.call(Request::get("/").body("").unwrap()));

    let (_, send) = handle.next_request().await.unwrap();
    let t = Instant::now();
    send.send_response(with_header(503, "retry-after", "3"));
    let (_, send) = handle.next_request().await.unwrap();
    assert_eq!(t.elapsed(), Duration::from_secs(3));

    let t = Instant::now();
    send.send_response(with_header(429, "grpc-retry-pushback-ms", "1500"));
    let (_, send) = handle.next_request().await.unwrap();
    assert_eq!(t.elapsed(), MS * 1500);

    // Beyond `max_server_delay`: give up at once.
    send.send_response(with_header(503, "retry-after", "11"));
    let res = call.await.unwrap().unwrap();
    assert_eq!(
        res.extensions().get::<RetriesExhausted>(),
        Some(&RetriesExhausted {
            reason: Reason::ServerDelay,
            attempts: 3
        })
    );

    // A negative pushback means do not retry.
    assert_ready_ok!(svc.poll_ready());
    let call = tokio::spawn(svc.call(Request::get("/").body("").unwrap()));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(with_header(503, "grpc-retry-pushback-ms", "-1"));
    let res = call.await.unwrap().unwrap();
    assert_eq!(
        res.extensions().get::<RetriesExhausted>().map(|m| m.reason),
        Some(Reason::DoNotRetry)
    );
    assert_pending!(handle.poll_request());
}

#[tokio::test(start_paused = true)]
async fn deadlines_travel_in_headers_both_ways() {
    // Client side: each attempt's remaining time goes out as grpc-timeout.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let backend = service_fn(move |req: Request<&'static str>| {
        record
            .lock()
            .push(req.headers().get("grpc-timeout").cloned());
        async { Ok::<_, BoxError>(status(200)) }
    });
    let retry = RetryLayer::builder()
        .classify(watertight_core::classify::ServerErrorsAsFailures)
        .timeout(MS * 1500)
        .build()
        .unwrap();
    let mut client = retry.layer(PropagateDeadlineLayer::new().layer(backend));
    client
        .ready()
        .await
        .unwrap()
        .call(Request::get("/").body("").unwrap())
        .await
        .unwrap();
    assert_eq!(
        seen.lock()[0].as_ref().unwrap(),
        &format_grpc_timeout(MS * 1500)
    );

    // Server side: the header becomes a Deadline, capped.
    let server = |layer: ServerDeadlineLayer| {
        layer.layer(service_fn(|req: Request<()>| async move {
            Ok::<_, Infallible>(req.extensions().get::<Deadline>().map(|d| d.remaining()))
        }))
    };
    let req = Request::builder()
        .header("grpc-timeout", "250m")
        .body(())
        .unwrap();
    let got = server(ServerDeadlineLayer::new())
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(got, Some(MS * 250));
    let req = Request::builder()
        .header("x-envoy-expected-rq-timeout-ms", "9000")
        .body(())
        .unwrap();
    let layer = ServerDeadlineLayer::new()
        .header(DeadlineHeader::Millis(http::HeaderName::from_static(
            "x-envoy-expected-rq-timeout-ms",
        )))
        .max(Duration::from_secs(2));
    assert_eq!(
        server(layer).oneshot(req).await.unwrap(),
        Some(Duration::from_secs(2))
    );
    let req = Request::builder()
        .header("grpc-timeout", "soon")
        .body(())
        .unwrap();
    assert_eq!(
        server(ServerDeadlineLayer::new())
            .oneshot(req)
            .await
            .unwrap(),
        None
    );
    // A deadline already on the request stays when it is the earlier one.
    for (own, want) in [(MS * 100, MS * 100), (MS * 900, MS * 250)] {
        let mut req = Request::builder()
            .header("grpc-timeout", "250m")
            .body(())
            .unwrap();
        req.extensions_mut().insert(Deadline::after(own));
        let got = server(ServerDeadlineLayer::new())
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(got, Some(want));
    }
}

/// What the axum server received, in order.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Bytes>>>);

async fn upload(State(received): State<Received>, body: Bytes) -> Response<String> {
    let first = {
        let mut r = received.0.lock();
        r.push(body);
        r.len() == 1
    };
    if first {
        Response::builder()
            .status(503)
            .header("retry-after", "1")
            .body("busy".to_owned())
            .unwrap()
    } else {
        Response::new("stored".to_owned())
    }
}

/// What an upload over loopback came to.
struct Upload {
    res: Response<Incoming>,
    /// The bodies the server received, in order.
    received: Vec<Bytes>,
    retries: u64,
    /// From the call to its response.
    took: Duration,
}

/// Streams `parts` in a POST, marked safe to retry, from a hyper client
/// behind the HTTP retry preset to an axum server on loopback that answers
/// its first request with 503 and `Retry-After: 1`.
async fn upload_over_loopback(parts: &[Bytes]) -> Upload {
    let received = Received::default();
    let app = Router::new()
        .route("/upload", post(upload))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Chunks>>();
    let retry = RetryLayer::builder()
        .policy(StandardPolicy::http())
        .build()
        .unwrap();
    let mut svc = retry.layer(client);
    let mut req = Request::post(format!("http://{addr}/upload"))
        .body(ReplayBody::new(streamed(parts)))
        .unwrap();
    req.extensions_mut().insert(RetrySafe);
    let started = Instant::now();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    let took = started.elapsed();
    let received = received.0.lock().clone();
    Upload {
        res,
        received,
        retries: retry.handle().snapshot().retries,
        took,
    }
}

/// Real sockets, real time: the server's `Retry-After: 1` costs one second.
#[tokio::test]
async fn hyper_client_replays_a_streamed_post_after_503_retry_after() {
    let parts = chunks(&[1000, 2000, 3000, 4000]);
    let up = upload_over_loopback(&parts).await;
    assert_eq!(up.res.status(), StatusCode::OK);
    assert!(up.took >= Duration::from_secs(1), "Retry-After honoured");
    let body = up.res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "stored");
    assert_eq!(up.received.len(), 2);
    assert_eq!(up.received[0], concat(&parts));
    assert_eq!(up.received[1], concat(&parts), "byte-identical replay");
    assert_eq!(up.retries, 1);
}

#[tokio::test]
async fn hyper_client_sends_an_over_limit_body_once() {
    // 80 KiB in 8 KiB chunks, over the 64 KiB replay limit.
    let parts = chunks(&[8192; 10]);
    let up = upload_over_loopback(&parts).await;
    assert_eq!(up.res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        up.res.extensions().get::<RetriesExhausted>(),
        Some(&RetriesExhausted {
            reason: Reason::NotReplayable,
            attempts: 1
        })
    );
    assert_eq!(up.received.len(), 1, "sent once");
    assert_eq!(up.received[0], concat(&parts));
    assert_eq!(up.retries, 0);
}
