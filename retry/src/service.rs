use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;
use watertight_core::{Attempted, BoxError, Extensions};

use crate::budget::{AnyBudget, Budget};
use crate::deadline::Deadline;
use crate::future::{attempt_deadline, earliest, too_late, Plan, ResponseFuture};
use crate::handle::RetryHandle;
use crate::policy::{Policy, StandardPolicy};
use crate::shared::Shared;

/// Retries failed requests within a budget. See the [crate docs](crate).
///
/// For each request the service:
///
/// 1. deposits in the budget and puts an [`Attempted`] on the request (when
///    it [carries extensions](Extensions)), which every attempt shares so a
///    balancer can send retries to endpoints not yet tried;
/// 2. sends it, keeping a copy when the [`Policy`] says it is idempotent;
/// 3. on a retryable failure, retries after the backoff (or the server's
///    longer delay) while attempts, the deadline and the budget allow, and
///    otherwise returns the last result, marked so that outer retry layers
///    do not retry it again (see [`is_exhausted`](crate::is_exhausted)).
///
/// Errors are boxed: the inner service's, and the layer's own
/// ([`error::Exhausted`](crate::error::Exhausted),
/// [`error::DeadlineExceeded`](crate::error::DeadlineExceeded),
/// [`error::AttemptTimedOut`](crate::error::AttemptTimedOut)).
///
/// # Clone
///
/// Clones the inner service; the budget, policy and counters are shared.
pub struct Retry<S, B = AnyBudget, P = StandardPolicy> {
    inner: S,
    shared: Arc<Shared<B, P>>,
}

impl<S, B, P> Retry<S, B, P> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared<B, P>>) -> Self {
        Retry { inner, shared }
    }

    inner_service_accessors!();
}

impl<S, B: Budget, P: Send + Sync + 'static> Retry<S, B, P> {
    /// A handle observing and controlling the layer this service belongs to.
    pub fn handle(&self) -> RetryHandle {
        RetryHandle {
            inner: self.shared.clone(),
        }
    }
}

impl<S: Clone, B, P> Clone for Retry<S, B, P> {
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, B: fmt::Debug, P: fmt::Debug> fmt::Debug for Retry<S, B, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, Req, B, P> Service<Req> for Retry<S, B, P>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    S::Response: Extensions,
    Req: Extensions,
    B: Budget,
    P: Policy<Req, S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, B, P>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let shared = &self.shared;
        let config = &shared.config;
        shared.budget.deposit();
        shared.on_request();

        let carries = req.carries_extensions();
        if carries && req.extension::<Attempted>().is_none() {
            req.insert_extension(Attempted::new());
        }

        // The clock is read only when a deadline is in play.
        let incoming = if carries {
            req.extension::<Deadline>().map(|d| d.instant())
        } else {
            None
        };
        let mut now = None;
        let deadline = if config.timeout.is_some() || incoming.is_some() {
            let n = Instant::now();
            now = Some(n);
            let own = config.timeout.and_then(|t| n.checked_add(t));
            earliest(own, incoming)
        } else {
            None
        };
        if let (Some(d), Some(n)) = (deadline, now) {
            if too_late(d, n, config.min_remaining) {
                return ResponseFuture::rejected(shared.clone(), deadline);
            }
        }

        let idempotent = shared.policy.is_idempotent(&req);
        let template = if idempotent && config.max_attempts > 1 {
            shared.policy.clone_request(&req)
        } else {
            None
        };

        let attempt_end = attempt_deadline(&mut req, config.per_try_timeout, deadline, now);
        let plan = Plan {
            idempotent,
            deadline,
        };
        if template.is_some() {
            // The ready service sends this attempt and stays with the
            // future for the retries; this service keeps a fresh clone.
            let clone = self.inner.clone();
            let mut ready = std::mem::replace(&mut self.inner, clone);
            let future = ready.call(req);
            ResponseFuture::new(
                future,
                shared.clone(),
                Some(ready),
                template,
                plan,
                attempt_end,
            )
        } else {
            let future = self.inner.call(req);
            ResponseFuture::new(future, shared.clone(), None, None, plan, attempt_end)
        }
    }
}
