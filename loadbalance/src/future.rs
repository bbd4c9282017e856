//! The balancer's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_core::TryFuture;
use pin_project::pin_project;
use tokio::time::Instant;
use watertight_core::BoxError;

use crate::stats::Tracker;

/// The response future of a [`Balancer`](crate::Balancer): the chosen
/// endpoint's future, measured.
///
/// When it completes, the result is classified and feeds the endpoint's
/// PeakEWMA estimate and outlier detection. Dropping it before it completes
/// (a cancelled request, a losing hedge) releases the endpoint's in-flight
/// count and records the time so far, and counts nowhere else.
#[pin_project]
pub struct ResponseFuture<F: TryFuture> {
    #[pin]
    kind: Kind<F>,
    call: Option<InFlight<F::Ok, F::Error>>,
}

#[pin_project(project = KindProj)]
enum Kind<F> {
    Called {
        #[pin]
        future: F,
    },
    Failed {
        error: Option<BoxError>,
    },
}

impl<F: TryFuture> ResponseFuture<F> {
    pub(crate) fn called(
        future: F,
        tracker: Arc<Tracker<F::Ok, F::Error>>,
        start: Instant,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Called { future },
            call: Some(InFlight {
                tracker,
                start,
                done: false,
            }),
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        ResponseFuture {
            kind: Kind::Failed { error: Some(error) },
            call: None,
        }
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: TryFuture,
    F::Error: Into<BoxError>,
{
    type Output = Result<F::Ok, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Called { future } => {
                let result = ready!(future.try_poll(cx));
                if let Some(mut call) = this.call.take() {
                    call.tracker.complete(&result, call.start);
                    call.done = true;
                }
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Failed { error } => {
                Poll::Ready(Err(error.take().expect("polled after completion")))
            }
        }
    }
}

impl<F: TryFuture> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoint = self
            .call
            .as_ref()
            .map(|c| c.tracker.endpoint.lock().id.clone());
        f.debug_struct("ResponseFuture")
            .field("endpoint", &endpoint)
            .finish_non_exhaustive()
    }
}

/// A call in flight: holds the endpoint's in-flight count until dropped.
struct InFlight<T, E> {
    tracker: Arc<Tracker<T, E>>,
    start: Instant,
    done: bool,
}

impl<T, E> Drop for InFlight<T, E> {
    fn drop(&mut self) {
        if !self.done {
            self.tracker.cancelled(self.start);
        }
        self.tracker.stats.active.fetch_sub(1, Relaxed);
    }
}
