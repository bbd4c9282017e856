//! Shared pieces of watertight's benchmarks.
//!
//! Every benchmark measures one layer on top of [`NoOp`], a service that is
//! always ready and answers at once, next to the peer's equivalent in the same
//! criterion group, so ratios are read from one run. Run them with
//! `cargo bench -p watertight-benches`; `BENCHMARKS.md` lists the results.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll};

use futures_util::future::{ready, Ready};
use tower::Service;

/// A service that is always ready and answers its request at once.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoOp;

impl<Req> Service<Req> for NoOp {
    type Response = Req;
    type Error = Infallible;
    type Future = Ready<Result<Req, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ready(Ok(req))
    }
}

/// One `poll_ready`, one `call` with `req` and one poll of the response
/// future, which must complete at once: what each per-call benchmark
/// measures.
///
/// # Panics
///
/// If the service is not ready or its future does not complete at its first
/// poll: the benchmark would then measure something else.
#[inline]
pub fn one_call<S: Service<Req>, Req>(svc: &mut S, cx: &mut Context<'_>, req: Req) -> S::Response {
    assert!(matches!(svc.poll_ready(cx), Poll::Ready(Ok(()))));
    let fut = pin!(svc.call(black_box(req)));
    match fut.poll(cx) {
        Poll::Ready(Ok(res)) => res,
        _ => panic!("a no-op call completes at its first poll"),
    }
}

/// A current-thread runtime for driving services inside `b.iter`, built once
/// outside the measured loop.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

pub mod comparison;
pub mod stacks;
