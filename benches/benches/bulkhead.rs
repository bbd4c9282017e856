//! The cost a concurrency limit adds to each call that it admits: watertight's
//! `Bulkhead` (fail-fast, taking its permit in `call`; and backpressure,
//! reserving it in `poll_ready`), tower's `ConcurrencyLimit` and
//! tower-resilience's bulkhead (fail-fast and backpressure), next to the bare
//! service in one group.
//!
//! Single thread, on the always-ready [`NoOp`] service, with a limit no call
//! reaches. Each iteration is one `poll_ready`, one `call` and one poll of the
//! response future to completion (which gives the permit back).
//!
//! `cargo bench -p watertight-benches --bench bulkhead -- --warm-up-time 1 --measurement-time 3`

use std::task::{Context, Waker};

use criterion::{criterion_group, criterion_main, Criterion};
use tower::limit::ConcurrencyLimitLayer;
use tower::Layer;
use watertight_benches::{one_call, runtime, NoOp};
use watertight_bulkhead::{BulkheadLayer, Mode};

const LIMIT: u32 = 1_000;

fn watertight(mode: Mode) -> watertight_bulkhead::Bulkhead<NoOp> {
    BulkheadLayer::builder()
        .max_concurrent(LIMIT)
        .mode(mode)
        .build()
        .expect("valid configuration")
        .layer(NoOp)
}

fn resilience(backpressure: bool) -> tower_resilience_bulkhead::BulkheadLayer {
    let builder =
        tower_resilience_bulkhead::BulkheadLayer::builder().max_concurrent_calls(LIMIT as usize);
    let builder = if backpressure {
        builder.backpressure()
    } else {
        builder.reject_when_full()
    };
    builder.build().expect("valid configuration")
}

fn admitted_call(c: &mut Criterion) {
    // tower-resilience's fail-fast mode waits on a zero timeout, which needs
    // a runtime's timer.
    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());

    let mut group = c.benchmark_group("bulkhead");
    group.bench_function("bare", |b| {
        let mut svc = NoOp;
        b.iter(|| one_call(&mut svc, &mut cx, 1));
    });
    group.bench_function("watertight_fail_fast", |b| {
        let mut svc = watertight(Mode::FailFast);
        b.iter(|| one_call(&mut svc, &mut cx, 1));
    });
    group.bench_function("watertight_backpressure", |b| {
        let mut svc = watertight(Mode::Backpressure);
        b.iter(|| one_call(&mut svc, &mut cx, 1));
    });
    group.bench_function("tower_concurrency_limit", |b| {
        let mut svc = ConcurrencyLimitLayer::new(LIMIT as usize).layer(NoOp);
        b.iter(|| one_call(&mut svc, &mut cx, 1));
    });
    group.bench_function("tower_resilience_fail_fast", |b| {
        let mut svc = resilience(false).layer(NoOp);
        b.iter(|| one_call(&mut svc, &mut cx, 1));
    });
    group.bench_function("tower_resilience_backpressure", |b| {
        let mut svc = resilience(true).layer(NoOp);
        b.iter(|| one_call(&mut svc, &mut cx, 1));
    });
    group.finish();
}

criterion_group!(benches, admitted_call);
criterion_main!(benches);
