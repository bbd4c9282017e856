//! The cost the chaos layer adds to each call when it injects nothing: with
//! no experiment running (the disabled path, one atomic load), and with an
//! experiment running that does not touch the request (a target that does
//! not match, or a fault at 0%).
//!
//! Single thread, on the always-ready [`NoOp`] service, next to the bare
//! service in the same group (tower has no fault-injection layer to compare
//! with). Each iteration is one `poll_ready`, one `call` and one poll of the
//! response future to completion.
//!
//! `cargo bench -p watertight-benches --bench chaos -- --warm-up-time 1 --measurement-time 3`

use std::task::{Context, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tower::Layer;
use watertight_benches::{one_call, runtime, NoOp};
use watertight_chaos::{
    Abort, AuditSink, Chaos, ChaosController, Experiment, ExperimentBuilder, Fault, Inspect, Target,
};
use watertight_core::ext::Extensions;

/// A request with a path, and no extensions.
#[derive(Clone, Copy, Debug)]
struct Req(u64);

impl Extensions for Req {}

impl Inspect for Req {
    fn path(&self) -> Option<&str> {
        Some("/api/users")
    }
}

fn controller() -> ChaosController {
    ChaosController::builder()
        .seed(1)
        .audit_sink(AuditSink::writer(std::io::sink()))
        .build()
        .expect("valid configuration")
}

/// A controller running `experiment` for an hour, and the layer it gives
/// over [`NoOp`].
fn running(experiment: ExperimentBuilder) -> (ChaosController, Chaos<NoOp>) {
    let chaos = controller();
    chaos
        .start(
            experiment
                .duration(Duration::from_secs(3600))
                .build()
                .expect("valid experiment"),
        )
        .expect("started");
    let svc = chaos.layer().layer(NoOp);
    (chaos, svc)
}

fn no_fault(c: &mut Criterion) {
    // Experiments need a runtime for their time to live.
    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());

    let mut group = c.benchmark_group("chaos/disabled");
    group.bench_function("bare", |b| {
        let mut svc = NoOp;
        b.iter(|| one_call(&mut svc, &mut cx, Req(1)).0);
    });
    group.bench_function("watertight", |b| {
        let chaos = controller();
        let mut svc = chaos.layer().layer(NoOp);
        b.iter(|| one_call(&mut svc, &mut cx, Req(1)).0);
    });
    group.finish();

    let mut group = c.benchmark_group("chaos/experiment_not_touching");
    group.bench_function("bare", |b| {
        let mut svc = NoOp;
        b.iter(|| one_call(&mut svc, &mut cx, Req(1)).0);
    });
    group.bench_function("watertight_target_miss", |b| {
        let experiment = Experiment::builder("admin-only")
            .target(Target::all().path_prefix("/admin"))
            .fault(Fault::Abort(Abort::Error), 100.0);
        let (_chaos, mut svc) = running(experiment);
        b.iter(|| one_call(&mut svc, &mut cx, Req(1)).0);
    });
    group.bench_function("watertight_zero_percent", |b| {
        let experiment = Experiment::builder("dry-run").fault(Fault::Abort(Abort::Error), 0.0);
        let (_chaos, mut svc) = running(experiment);
        b.iter(|| one_call(&mut svc, &mut cx, Req(1)).0);
    });
    group.finish();
}

criterion_group!(benches, no_fault);
criterion_main!(benches);
