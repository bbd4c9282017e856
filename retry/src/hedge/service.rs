use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;
use watertight_core::{Attempted, BoxError, Extensions};

use super::future::ResponseFuture;
use super::layer::{HedgeHandle, HedgeShared};
use crate::budget::{AnyBudget, Budget};
use crate::policy::{Policy, StandardPolicy};

/// Sends backup copies of slow idempotent requests. See the
/// [module docs](crate::hedge).
///
/// Errors are boxed; the layer adds no error of its own.
///
/// # Clone
///
/// Clones the inner service; the budget, histogram and counters are
/// shared.
pub struct Hedge<S, B = AnyBudget, P = StandardPolicy> {
    inner: S,
    shared: Arc<HedgeShared<B, P>>,
}

impl<S, B, P> Hedge<S, B, P> {
    pub(crate) fn from_parts(inner: S, shared: Arc<HedgeShared<B, P>>) -> Self {
        Hedge { inner, shared }
    }

    inner_service_accessors!();
}

impl<S, B: Budget, P: Send + Sync + 'static> Hedge<S, B, P> {
    /// A handle observing the layer this service belongs to.
    pub fn handle(&self) -> HedgeHandle {
        super::layer::handle_of(&self.shared)
    }
}

impl<S: Clone, B, P> Clone for Hedge<S, B, P> {
    fn clone(&self) -> Self {
        Hedge {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, B: fmt::Debug, P: fmt::Debug> fmt::Debug for Hedge<S, B, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<S, Req, B, P> Service<Req> for Hedge<S, B, P>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: Extensions,
    B: Budget,
    P: Policy<Req, S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, B, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let shared = &self.shared;
        shared.on_request();
        shared.budget.deposit();
        if req.carries_extensions() && req.extension::<Attempted>().is_none() {
            req.insert_extension(Attempted::new());
        }
        let now = Instant::now();
        let plan = if shared.policy.is_idempotent(&req) {
            shared
                .delay(now)
                .and_then(|delay| shared.policy.clone_request(&req).map(|t| (delay, t)))
        } else {
            None
        };
        match plan {
            Some((delay, template)) => {
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                let future = ready.call(req);
                ResponseFuture::hedging(future, shared.clone(), ready, template, now, delay)
            }
            None => ResponseFuture::single(self.inner.call(req), shared.clone(), now),
        }
    }
}
