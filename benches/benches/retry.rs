//! The cost a retry layer adds to each call when nothing fails: the path
//! every request of a healthy service takes.
//!
//! One criterion group, single thread, on the always-ready [`NoOp`] service:
//! the bare service; watertight's `Retry` (defaults: 3 attempts, the ratio
//! budget of 20% + 10/s over 10 s, every request idempotent and cloned for
//! a possible retry); `tower::retry::Retry` with a policy that deposits in a
//! `TpsBudget` (10 s, 10/s, 20%) and clones the request; and
//! `tower-resilience`'s retry (3 attempts, exponential backoff, its token
//! bucket budget). Each iteration is one `poll_ready`, one `call` and one
//! poll of the response future to completion.
//!
//! `cargo bench -p watertight-benches --bench retry -- --warm-up-time 1 --measurement-time 3`

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::future::{ready, Ready};
use tower::retry::budget::{Budget, TpsBudget};
use tower::Layer;
use watertight_benches::{one_call, runtime, NoOp};
use watertight_core::Extensions;
use watertight_retry::policy::{AllRequests, NoHints};
use watertight_retry::RetryLayer;

/// A small request, as most RPC requests are: cheap to clone.
#[derive(Clone, Copy, Debug)]
struct Req(u64);

impl Extensions for Req {}

/// tower's retry policy for the benchmark: every success deposits in the
/// budget; a failure retries while attempts remain and the budget allows.
#[derive(Clone)]
struct TowerPolicy {
    budget: Arc<TpsBudget>,
    attempts_left: u32,
}

impl<E> tower::retry::Policy<Req, Req, E> for TowerPolicy {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut Req, result: &mut Result<Req, E>) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(_) if self.attempts_left > 1 && self.budget.withdraw() => {
                self.attempts_left -= 1;
                Some(ready(()))
            }
            Err(_) => None,
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(*req)
    }
}

fn no_retry(c: &mut Criterion) {
    // tower's and tower-resilience's budgets read tokio's clock; give every
    // contestant the runtime context a real service has.
    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut group = c.benchmark_group("retry/no_retry");

    group.bench_function("bare", |b| {
        let mut svc = NoOp;
        b.iter(|| one_call(&mut svc, &mut cx, Req(1)).0);
    });

    group.bench_function("watertight", |b| {
        let layer = RetryLayer::builder()
            .idempotency(AllRequests)
            .hints(NoHints)
            .build()
            .expect("valid configuration");
        let mut svc = layer.layer(NoOp);
        b.iter(|| one_call(&mut svc, &mut cx, Req(1)).0);
    });

    group.bench_function("tower", |b| {
        let policy = TowerPolicy {
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            attempts_left: 3,
        };
        let mut svc = tower::retry::Retry::new(policy, NoOp);
        b.iter(|| one_call(&mut svc, &mut cx, Req(1)).0);
    });

    group.bench_function("tower-resilience", |b| {
        let budget = tower_resilience_retry::RetryBudgetBuilder::new()
            .token_bucket()
            .tokens_per_second(10.0)
            .max_tokens(100)
            .build()
            .expect("valid budget");
        let layer = tower_resilience_retry::RetryLayer::<Req, Req, Infallible>::builder()
            .max_attempts(3)
            .exponential_backoff(Duration::from_millis(25))
            .retry_on(|_: &Infallible| true)
            .budget(budget)
            .build();
        let mut svc = layer.layer(NoOp);
        b.iter(|| one_call(&mut svc, &mut cx, Req(1)).0);
    });

    group.finish();
}

criterion_group!(benches, no_retry);
criterion_main!(benches);
