use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};
use tower_service::Service;
use watertight_core::{BoxError, Classify, ErrorsAsFailures};

use crate::breaker::{Admission, Breaker};
use crate::config::Mode;
use crate::future::ResponseFuture;
use crate::handle::CircuitBreakerHandle;

/// A circuit breaker around a service; built by a
/// [`CircuitBreakerLayer`](crate::CircuitBreakerLayer).
///
/// `poll_ready` asks the breaker whether the next call may go and keeps
/// what it must for `call`: a half-open breaker's probe permit, a
/// rejection, and in [`Mode::Backpressure`] any admission (a ready service
/// under a balancer takes the call). A closed [`Mode::FailFast`] breaker
/// reserves nothing, and `call` decides again, so a breaker that opened in
/// between fails the call at once.
///
/// - admitted: `poll_ready` is the inner service's, and `call` calls it and
///   records the result when the response future completes; a response
///   future dropped before then records nothing and gives its probe permit
///   back;
/// - rejected, [`Mode::FailFast`]: `poll_ready` is `Ready` and `call` fails
///   at once with [`error::Open`](crate::error::Open) without calling the
///   inner service;
/// - rejected, [`Mode::Backpressure`]: `poll_ready` is `Pending`, and the
///   task is woken when the next probe may go: at the end of the open
///   duration (a timer), when a probe permit comes back, or at any
///   transition.
///
/// Errors are [`BoxError`]s: the inner service's errors, or an
/// [`error::Open`](crate::error::Open).
///
/// # Clone
///
/// Clones share the breaker (and its handle) but not a readiness
/// reservation: each clone calls `poll_ready` for itself, as with tower's
/// `ConcurrencyLimit`.
///
/// # Panics
///
/// In [`Mode::Backpressure`], `poll_ready` on a rejecting breaker starts a
/// `tokio` timer, and so panics outside a `tokio` runtime with time
/// enabled.
pub struct CircuitBreaker<S, C = ErrorsAsFailures> {
    inner: S,
    breaker: Arc<Breaker>,
    classify: C,
    /// The admission `poll_ready` decided on, spent by `call`.
    ready: Option<Admission>,
    /// The wake-up of a waiting `Backpressure` service, allocated on its
    /// first wait and reused.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn from_parts(inner: S, breaker: Arc<Breaker>, classify: C) -> Self {
        CircuitBreaker {
            inner,
            breaker,
            classify,
            ready: None,
            sleep: None,
        }
    }

    /// The breaker's handle: state, counters and manual control.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(self.breaker.clone())
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the breaker, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Waits for the breaker to admit a call: registers the task for the
    /// next transition or returned permit, then re-checks, so a wake-up
    /// that came between the first check and the registration is not
    /// lost; and sleeps until the deadline that changes the answer.
    fn poll_admit_waiting(&mut self, cx: &mut Context<'_>) -> Poll<Admission> {
        loop {
            let open = match self.breaker.admit() {
                Admission::Reject(open) => open,
                admitted => return Poll::Ready(admitted),
            };
            self.breaker.register(cx.waker());
            let open = match self.breaker.admit() {
                Admission::Reject(_) => open,
                admitted => return Poll::Ready(admitted),
            };
            let Some(deadline) = self.breaker.wake_at(open.state()) else {
                return Poll::Pending;
            };
            if Instant::now() >= deadline {
                // The deadline passed between the checks: decide again.
                continue;
            }
            let sleep = match &mut self.sleep {
                Some(s) => {
                    if s.deadline() != deadline {
                        s.as_mut().reset(deadline);
                    }
                    s
                }
                None => self
                    .sleep
                    .insert(Box::pin(tokio::time::sleep_until(deadline))),
            };
            match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        CircuitBreaker::from_parts(
            self.inner.clone(),
            self.breaker.clone(),
            self.classify.clone(),
        )
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .field("classify", &self.classify)
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Only a probe permit is a reservation worth keeping across polls;
        // a rejection is decided afresh, so a service polled for a while
        // sees the breaker as it is now.
        if matches!(self.ready, Some(Admission::Reject(_))) {
            self.ready = None;
        }
        if self.ready.is_none() {
            match self.breaker.mode {
                // Closed, metrics-only or disabled: nothing to reserve, and
                // `call` decides again with one load.
                Mode::FailFast if self.breaker.admits_freely() => {}
                Mode::FailFast => match self.breaker.admit() {
                    admission @ Admission::Reject(_) => {
                        // `call` fails without the inner service.
                        self.ready = Some(admission);
                        return Poll::Ready(Ok(()));
                    }
                    admission @ Admission::Probe(_) => self.ready = Some(admission),
                    Admission::Admit(_) | Admission::Pass => {}
                },
                // A ready service under a balancer is one that will take
                // the call: keep whatever was admitted.
                Mode::Backpressure => match self.poll_admit_waiting(cx) {
                    Poll::Ready(admission) => self.ready = Some(admission),
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                self.ready = None;
                Poll::Ready(Err(e.into()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        // Checked before taking, so the common case writes nothing back.
        let admission = match self.ready.is_some() {
            true => self.ready.take().expect("checked"),
            false => self.breaker.admit(),
        };
        ResponseFuture::admitted(
            &self.breaker,
            admission,
            || self.inner.call(req),
            &self.classify,
        )
    }
}
