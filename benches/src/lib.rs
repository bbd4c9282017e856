//! Shared pieces of watertight's benchmarks.
//!
//! Every benchmark measures one layer on top of [`NoOp`], a service that is
//! always ready and answers at once, next to the peer's equivalent in the same
//! criterion group, so ratios are read from one run. Run them with
//! `cargo bench -p watertight-benches`; `BENCHMARKS.md` lists the results.

use std::convert::Infallible;
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
