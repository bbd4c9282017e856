//! The cost a circuit breaker adds to each call while closed and every call
//! succeeds: the path every request of a healthy service takes.
//!
//! One criterion group, single thread, on the always-ready [`NoOp`] service:
//! the bare service, watertight's breaker (default configuration: count
//! window of 100 with the failure-rate and consecutive-failure policies on),
//! `tower-resilience`'s (failure rate 0.5 over 100 calls, minimum 20) and
//! `recloser`'s (its defaults: error rate 0.5 over 100 calls) wrapping the
//! service's future. Each iteration is one `poll_ready`, one `call` and one
//! poll of the response future to completion.
//!
//! `cargo bench -p watertight-benches --bench circuit_breaker -- --warm-up-time 1 --measurement-time 3`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{criterion_group, criterion_main, Criterion};
use tower::{Layer, Service};
use watertight_benches::{one_call, runtime, NoOp};
use watertight_circuit_breaker::CircuitBreakerLayer;

fn closed_success(c: &mut Criterion) {
    // tower-resilience's breaker takes a tokio mutex and may start tokio
    // timers: give it a runtime context, as a real service has.
    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut group = c.benchmark_group("circuit_breaker/closed_success");

    group.bench_function("bare", |b| {
        let mut svc = NoOp;
        b.iter(|| one_call(&mut svc, &mut cx, 1));
    });

    group.bench_function("watertight", |b| {
        let layer = CircuitBreakerLayer::builder()
            .build()
            .expect("valid configuration");
        let mut svc = layer.layer(NoOp);
        b.iter(|| one_call(&mut svc, &mut cx, 1));
    });

    group.bench_function("tower-resilience", |b| {
        let layer = tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
            .failure_rate_threshold(0.5)
            .sliding_window_size(100)
            .minimum_number_of_calls(20)
            .build()
            .expect("valid configuration");
        let mut svc = layer.layer(NoOp);
        b.iter(|| one_call(&mut svc, &mut cx, 1));
    });

    group.bench_function("recloser", |b| {
        let recloser = recloser::AsyncRecloser::from(recloser::Recloser::default());
        let mut svc = NoOp;
        b.iter(|| {
            assert!(matches!(
                Service::<u64>::poll_ready(&mut svc, &mut cx),
                Poll::Ready(Ok(()))
            ));
            let fut = pin!(recloser.call(svc.call(black_box(1u64))));
            match fut.poll(&mut cx) {
                Poll::Ready(Ok(res)) => res,
                _ => panic!("a no-op call completes at its first poll"),
            }
        });
    });

    group.finish();
}

criterion_group!(benches, closed_success);
criterion_main!(benches);
