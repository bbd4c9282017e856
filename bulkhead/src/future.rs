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

/// The response future of a [`Bulkhead`](crate::Bulkhead).
#[pin_project]
pub struct ResponseFuture<F> {
    #[pin]
    kind: Kind<F, Permit, Full>,
}

/// The response future of a [`PartitionedBulkhead`](crate::PartitionedBulkhead).
#[pin_project]
pub struct PartitionFuture<F> {
    #[pin]
    kind: Kind<F, PartitionPermit, Full>,
}

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

impl<F, G, E> Kind<F, G, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    #[inline]
    fn poll_kind<T, FE>(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, BoxError>>
    where
        F: Future<Output = Result<T, FE>>,
        FE: Into<BoxError>,
    {
        match self.project() {
            KindProj::Called { future, guard } => {
                let result = ready!(future.poll(cx));
                drop(guard.take());
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
                .field("permit", guard)
                .finish_non_exhaustive(),
            Kind::Rejected { error } => f.debug_struct("Rejected").field("error", error).finish(),
        }
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn called(future: F, permit: Permit) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                guard: Some(permit),
            },
        }
    }

    pub(crate) fn rejected(error: Full) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { error: Some(error) },
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

impl<F> PartitionFuture<F> {
    #[inline]
    pub(crate) fn called(future: F, permit: PartitionPermit) -> Self {
        PartitionFuture {
            kind: Kind::Called {
                future,
                guard: Some(permit),
            },
        }
    }

    pub(crate) fn rejected(error: Full) -> Self {
        PartitionFuture {
            kind: Kind::Rejected { error: Some(error) },
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
    kind: AdaptiveKind<F, C>,
}

#[pin_project(project = AdaptiveProj)]
enum AdaptiveKind<F, C> {
    Called {
        #[pin]
        future: F,
        permit: Option<Permit>,
        start: Instant,
        classify: C,
    },
    Rejected {
        error: Option<Full>,
    },
}

impl<F, C> AdaptiveFuture<F, C> {
    pub(crate) fn called(future: F, permit: Permit, start: Instant, classify: C) -> Self {
        AdaptiveFuture {
            kind: AdaptiveKind::Called {
                future,
                permit: Some(permit),
                start,
                classify,
            },
        }
    }

    pub(crate) fn rejected(error: Full) -> Self {
        AdaptiveFuture {
            kind: AdaptiveKind::Rejected { error: Some(error) },
        }
    }
}

impl<F, C> fmt::Debug for AdaptiveFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            AdaptiveKind::Called { permit, start, .. } => f
                .debug_struct("AdaptiveFuture")
                .field("permit", permit)
                .field("start", start)
                .finish_non_exhaustive(),
            AdaptiveKind::Rejected { error } => f
                .debug_struct("AdaptiveFuture")
                .field("rejected", error)
                .finish(),
        }
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
        match self.project().kind.project() {
            AdaptiveProj::Called {
                future,
                permit,
                start,
                classify,
            } => {
                let result = ready!(future.poll(cx));
                if let Some(permit) = permit.take() {
                    let dropped = match classify.classify(&result) {
                        ResponseClass::Success => Some(false),
                        ResponseClass::Failure { retryable: true } => Some(true),
                        _ => None,
                    };
                    if let Some(dropped) = dropped {
                        let sample =
                            Sample::new(*start, start.elapsed(), permit.in_flight(), dropped);
                        permit.limiter().on_sample(&sample);
                    }
                }
                Poll::Ready(result.map_err(Into::into))
            }
            AdaptiveProj::Rejected { error } => {
                Poll::Ready(Err(Box::new(error.take().expect(POLLED_AFTER_COMPLETION))))
            }
        }
    }
}

/// The response future of an [`Admission`](crate::Admission): when the call
/// completes, its result is classified and counted in the window.
#[pin_project]
pub struct AdmissionFuture<F, C> {
    #[pin]
    kind: AdmissionKind<F, C>,
}

#[pin_project(project = AdmissionProj)]
enum AdmissionKind<F, C> {
    Called {
        #[pin]
        future: F,
        throttle: Option<Arc<Throttle>>,
        classify: C,
    },
    Rejected {
        error: Option<Throttled>,
    },
}

impl<F, C> AdmissionFuture<F, C> {
    pub(crate) fn called(future: F, throttle: Arc<Throttle>, classify: C) -> Self {
        AdmissionFuture {
            kind: AdmissionKind::Called {
                future,
                throttle: Some(throttle),
                classify,
            },
        }
    }

    pub(crate) fn rejected(error: Throttled) -> Self {
        AdmissionFuture {
            kind: AdmissionKind::Rejected { error: Some(error) },
        }
    }
}

impl<F, C> fmt::Debug for AdmissionFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            AdmissionKind::Called { throttle, .. } => f
                .debug_struct("AdmissionFuture")
                .field("throttle", throttle)
                .finish_non_exhaustive(),
            AdmissionKind::Rejected { error } => f
                .debug_struct("AdmissionFuture")
                .field("rejected", error)
                .finish(),
        }
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
        match self.project().kind.project() {
            AdmissionProj::Called {
                future,
                throttle,
                classify,
            } => {
                let result = ready!(future.poll(cx));
                if let Some(t) = throttle.take() {
                    t.record(classify.classify(&result));
                }
                Poll::Ready(result.map_err(Into::into))
            }
            AdmissionProj::Rejected { error } => {
                Poll::Ready(Err(Box::new(error.take().expect(POLLED_AFTER_COMPLETION))))
            }
        }
    }
}
