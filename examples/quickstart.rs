//! A circuit breaker in front of a server that fails for a while.
//!
//! An axum server on a loopback port answers `200 OK`, then `503 Service
//! Unavailable` for a stretch, then `200 OK` again. A hyper-util client calls
//! it every 50 ms through watertight's circuit breaker. Each state change of
//! the breaker is printed as it happens, then a summary: while the server
//! was down, most calls were rejected at once without reaching it.
//!
//! `cargo run --release --example quickstart`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State as Shared;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::{sleep, Instant};
use tower::{Service, ServiceBuilder, ServiceExt};
use watertight::circuit_breaker::error::Open;
use watertight::circuit_breaker::event::Event;
use watertight::circuit_breaker::{Backoff, CircuitBreakerLayer, ServerErrorsAsFailures};
use watertight::core::{find_cause, BoxError};

const HEALTHY_FOR: Duration = Duration::from_millis(1_000);
const FAILING_FOR: Duration = Duration::from_millis(2_500);
const RUN_FOR: Duration = Duration::from_millis(5_500);
const EVERY: Duration = Duration::from_millis(50);

/// What the server shares with its handler.
#[derive(Default)]
struct Server {
    failing: AtomicBool,
    requests: AtomicU64,
}

async fn handler(Shared(server): Shared<Arc<Server>>) -> (StatusCode, &'static str) {
    server.requests.fetch_add(1, Relaxed);
    if server.failing.load(Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance\n")
    } else {
        (StatusCode::OK, "hello\n")
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The server.
    let server = Arc::new(Server::default());
    let app = Router::new()
        .route("/", get(handler))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    println!(
        "A server on http://{addr} answers 200, then 503 from {HEALTHY_FOR:?} to {:?};",
        HEALTHY_FOR + FAILING_FOR
    );
    println!("a client calls it every {EVERY:?} through a circuit breaker.\n");
    let start = Instant::now();
    let at = move || format!("{:>5.2} s", start.elapsed().as_secs_f64());

    // Its outage.
    let outage = server.clone();
    tokio::spawn(async move {
        sleep(HEALTHY_FOR).await;
        outage.failing.store(true, Relaxed);
        println!("{}  server: starts failing with 503", at());
        sleep(FAILING_FOR).await;
        outage.failing.store(false, Relaxed);
        println!("{}  server: recovered", at());
    });

    // The client: hyper-util's, behind a breaker that opens after three
    // failures in a row, waits 250 ms, then twice as long after each failed
    // probe (up to 1 s), and closes after one successful probe.
    let breaker = CircuitBreakerLayer::builder()
        .name("quickstart")
        .classify(ServerErrorsAsFailures)
        .consecutive_failures(3)
        .open_backoff(Backoff::exponential(
            Duration::from_millis(250),
            Duration::from_secs(1),
        )?)
        .on_event(move |event| {
            if let Event::Transition(t) = event {
                let next = match t.open_for {
                    Some(d) => format!(", next probe in {d:?}"),
                    None => String::new(),
                };
                println!(
                    "{}  breaker: {} -> {} ({}{next})",
                    at(),
                    t.from,
                    t.to,
                    t.cause
                );
            }
        })
        .build()?;
    let http = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut client = ServiceBuilder::new().layer(breaker).service(http);

    let (mut calls, mut ok, mut failed, mut rejected) = (0u64, 0u64, 0u64, 0u64);
    let mut tick = tokio::time::interval(EVERY);
    while start.elapsed() < RUN_FOR {
        tick.tick().await;
        let request = http::Request::get(format!("http://{addr}/")).body(Empty::new())?;
        calls += 1;
        match client.ready().await?.call(request).await {
            Ok(response) if response.status().is_success() => ok += 1,
            Ok(_) => failed += 1,
            Err(e) if find_cause::<Open>(&*e).is_some() => rejected += 1,
            Err(e) => {
                println!("{}  client: {e}", at());
                failed += 1;
            }
        }
    }

    let seen = server.requests.load(Relaxed);
    println!(
        "\nIn {:.1} s: {calls} calls, {ok} succeeded, {failed} failures seen,",
        start.elapsed().as_secs_f64()
    );
    println!(
        "{rejected} rejected fast by the breaker without reaching the server (it served {seen})."
    );
    println!("Final state: {}.", client.handle().state());
    Ok(())
}
