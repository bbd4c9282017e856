//! Reference stacks for the scenarios.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::timeout::Timeout;
use tower::util::BoxCloneService;
use tower::{Service, ServiceExt};
use watertight_core::BoxError;

use crate::backend::SimBackend;
use crate::scenario::{ClientContext, Stack};

/// The `none` stack: round robin over every backend, the per-try timeout,
/// no retries, no breakers — what a client without resilience does.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unprotected;

impl Stack for Unprotected {
    type Service = BoxCloneService<Request<()>, Response<()>, BoxError>;
    type Error = BoxError;
    type Future = <Self::Service as Service<Request<()>>>::Future;

    fn name(&self) -> String {
        "none".to_owned()
    }

    fn client(&self, ctx: &ClientContext) -> Self::Service {
        let rr = RoundRobin {
            backends: ctx.backends.clone().into(),
            next: Arc::default(),
        };
        Timeout::new(rr, ctx.per_try_timeout).boxed_clone()
    }
}

/// Round robin over a fixed set of backends; clones share the position.
#[derive(Clone, Debug)]
struct RoundRobin {
    backends: Arc<[SimBackend]>,
    next: Arc<AtomicUsize>,
}

impl Service<Request<()>> for RoundRobin {
    type Response = Response<()>;
    type Error = BoxError;
    type Future = futures_util::future::MapErr<
        <SimBackend as Service<Request<()>>>::Future,
        fn(crate::backend::ConnectionLost) -> BoxError,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        use futures_util::TryFutureExt;
        let i = self.next.fetch_add(1, Relaxed) % self.backends.len();
        let mut backend = self.backends[i].clone();
        backend.call(req).map_err(Into::into as fn(_) -> BoxError)
    }
}
