//! The response futures. Each holds its permit next to the inner future and
//! gives it back when the call completes or the future is dropped, so a
//! cancelled call never keeps capacity.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;
use tokio::time::Instant;
use watertight_core::{BoxError, Classify, ResponseClass};

use crate::admission::Throttle;
use crate::error::{Full, Throttled};
use crate::limit::Sample;
use crate::limiter::Permit;
use crate::partition::PartitionPermit;

const POLLED_AFTER_COMPLETION: &str = "response future polled after completion";

/// What a response future holds while its call runs: given the call's
/// result when it completes, dropped unused when the future is.
trait Guard<T, E> {
    fn complete(self, result: &Result<T, E>);
}

impl<T, E> Guard<T, E> for Permit {
    #[inline]
    fn complete(self, _: &Result<T, E>) {}
}

impl<T, E> Guard<T, E> for PartitionPermit {
    #[inline]
    fn complete(self, _: &Result<T, E>) {}
}

/// An adaptive limiter's permit, with what the call's sample needs.
struct Sampled<C> {
    permit: Permit,
    start: Instant,
    classify: C,
}

impl<C: Classify<T, E>, T, E> Guard<T, E> for Sampled<C> {
    fn complete(self, result: &Result<T, E>) {
        let dropped = match self.classify.classify(result) {
            ResponseClass::Success => false,
            ResponseClass::Failure { retryable: true } => true,
            _ => return,
        };
        let sample = Sample::new(
            self.start,
            self.start.elapsed(),
            self.permit.in_flight(),
            dropped,
        );
        self.permit.limiter().on_sample(&sample);
    }
}

impl<C> fmt::Debug for Sampled<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampled")
            .field("permit", &self.permit)
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

/// The throttle whose window counts the call's result.
struct Recorded<C> {
    throttle: Arc<Throttle>,
    classify: C,
}

impl<C: Classify<T, E>, T, E> Guard<T, E> for Recorded<C> {
    fn complete(self, result: &Result<T, E>) {
        self.throttle.record(self.classify.classify(result));
    }
}

impl<C> fmt::Debug for Recorded<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorded")
            .field("throttle", &self.throttle)
            .finish_non_exhaustive()
    }
}

/// A call under way with its guard, or a rejection waiting to be returned.
#[pin_project(project = KindProj)]
enum Kind<F, G, E> {
    Called {
        #[pin]
        future: F,
        guard: Option<G>,
    },
    Rejected {
        error: Option<E>,
    },
}

impl<F, G, E> Kind<F, G, E> {
    #[inline]
    fn called(future: F, guard: G) -> Self {
        Kind::Called {
            future,
            guard: Some(guard),
        }
    }

    fn rejected(error: E) -> Self {
        Kind::Rejected { error: Some(error) }
    }

    #[inline]
    fn poll_kind<T, FE>(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, BoxError>>
    where
        F: Future<Output = Result<T, FE>>,
        FE: Into<BoxError>,
        G: Guard<T, FE>,
        E: std::error::Error + Send + Sync + 'static,
    {
        match self.project() {
            KindProj::Called { future, guard } => {
                let result = ready!(future.poll(cx));
                if let Some(guard) = guard.take() {
                    guard.complete(&result);
                }
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Rejected { error } => {
                Poll::Ready(Err(Box::new(error.take().expect(POLLED_AFTER_COMPLETION))))
            }
        }
    }
}

impl<F, G: fmt::Debug, E: fmt::Debug> fmt::Debug for Kind<F, G, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Called { guard, .. } => f
                .debug_struct("Called")
                .field("guard", guard)
                .finish_non_exhaustive(),
            Kind::Rejected { error } => f.debug_struct("Rejected").field("error", error).finish(),
        }
    }
}

/// The response future of a [`Bulkhead`](crate::Bulkhead).
#[pin_project]
pub struct ResponseFuture<F> {
    #[pin]
    kind: Kind<F, Permit, Full>,
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn called(future: F, permit: Permit) -> Self {
        ResponseFuture {
            kind: Kind::called(future, permit),
        }
    }

    pub(crate) fn rejected(error: Full) -> Self {
        ResponseFuture {
            kind: Kind::rejected(error),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ResponseFuture").field(&self.kind).finish()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().kind.poll_kind(cx)
    }
}

/// The response future of a [`PartitionedBulkhead`](crate::PartitionedBulkhead).
#[pin_project]
pub struct PartitionFuture<F> {
    #[pin]
    kind: Kind<F, PartitionPermit, Full>,
}

impl<F> PartitionFuture<F> {
    #[inline]
    pub(crate) fn called(future: F, permit: PartitionPermit) -> Self {
        PartitionFuture {
            kind: Kind::called(future, permit),
        }
    }

    pub(crate) fn rejected(error: Full) -> Self {
        PartitionFuture {
            kind: Kind::rejected(error),
        }
    }
}

impl<F> fmt::Debug for PartitionFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PartitionFuture").field(&self.kind).finish()
    }
}

impl<F, T, E> Future for PartitionFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().kind.poll_kind(cx)
    }
}

/// The response future of an
/// [`AdaptiveConcurrency`](crate::AdaptiveConcurrency): when the call
/// completes, its result is classified and fed to the limit algorithm.
#[pin_project]
pub struct AdaptiveFuture<F, C> {
    #[pin]
    kind: Kind<F, Sampled<C>, Full>,
}

impl<F, C> AdaptiveFuture<F, C> {
    pub(crate) fn called(future: F, permit: Permit, start: Instant, classify: C) -> Self {
        let sampled = Sampled {
            permit,
            start,
            classify,
        };
        AdaptiveFuture {
            kind: Kind::called(future, sampled),
        }
    }

    pub(crate) fn rejected(error: Full) -> Self {
        AdaptiveFuture {
            kind: Kind::rejected(error),
        }
    }
}

impl<F, C> fmt::Debug for AdaptiveFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AdaptiveFuture").field(&self.kind).finish()
    }
}

impl<F, C, T, E> Future for AdaptiveFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().kind.poll_kind(cx)
    }
}

/// The response future of an [`Admission`](crate::Admission): when the call
/// completes, its result is classified and counted in the window.
#[pin_project]
pub struct AdmissionFuture<F, C> {
    #[pin]
    kind: Kind<F, Recorded<C>, Throttled>,
}

impl<F, C> AdmissionFuture<F, C> {
    pub(crate) fn called(future: F, throttle: Arc<Throttle>, classify: C) -> Self {
        AdmissionFuture {
            kind: Kind::called(future, Recorded { throttle, classify }),
        }
    }

    pub(crate) fn rejected(error: Throttled) -> Self {
        AdmissionFuture {
            kind: Kind::rejected(error),
        }
    }
}

impl<F, C> fmt::Debug for AdmissionFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AdmissionFuture").field(&self.kind).finish()
    }
}

impl<F, C, T, E> Future for AdmissionFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().kind.poll_kind(cx)
    }
}
