//! The response future of [`CircuitBreaker`](crate::CircuitBreaker) and
//! [`KeyedCircuitBreaker`](crate::KeyedCircuitBreaker).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;
use tokio::time::Instant;
use watertight_core::{BoxError, Classify};

use crate::breaker::Breaker;
use crate::probe::Permit;

/// Records one admitted call's result with its breaker. Dropped without a
/// result (the call was cancelled), it counts nothing and gives back its
/// probe permit.
pub(crate) struct Recorder {
    breaker: Arc<Breaker>,
    kind: Kind,
}

enum Kind {
    Admitted { word: u64, start: Option<Instant> },
    Probe(Option<Permit>),
}

impl Recorder {
    #[inline]
    pub(crate) fn admitted(breaker: Arc<Breaker>, word: u64) -> Self {
        let start = breaker.start();
        Recorder {
            breaker,
            kind: Kind::Admitted { word, start },
        }
    }

    pub(crate) fn probe(breaker: Arc<Breaker>, permit: Permit) -> Self {
        Recorder {
            breaker,
            kind: Kind::Probe(Some(permit)),
        }
    }

    #[inline]
    fn finish(mut self, class: watertight_core::ResponseClass) {
        match &mut self.kind {
            Kind::Admitted { word, start } => self.breaker.complete(*word, class, *start),
            Kind::Probe(permit) => {
                if let Some(p) = permit.take() {
                    self.breaker.complete_probe(p, class);
                }
            }
        }
    }
}

impl Drop for Recorder {
    #[inline]
    fn drop(&mut self) {
        if let Kind::Probe(permit) = &mut self.kind {
            if let Some(p) = permit.take() {
                let generation = p.generation();
                if p.release() {
                    self.breaker.probe_returned(generation);
                }
            }
        }
    }
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Recorder");
        d.field("breaker", &self.breaker);
        match &self.kind {
            Kind::Admitted { word, .. } => d.field("admitted", word),
            Kind::Probe(p) => d.field("probe", p),
        };
        d.finish()
    }
}

/// The response future of a breaker: the inner call and what to record
/// when it completes, or the rejection.
#[pin_project]
pub struct ResponseFuture<F, C> {
    #[pin]
    kind: ResponseKind<F, C>,
}

#[pin_project(project = ResponseKindProj)]
enum ResponseKind<F, C> {
    Called {
        #[pin]
        future: F,
        recorder: Option<Recorder>,
        classify: C,
    },
    Rejected {
        error: Option<BoxError>,
    },
}

impl<F, C> ResponseFuture<F, C> {
    #[inline]
    pub(crate) fn called(future: F, recorder: Option<Recorder>, classify: C) -> Self {
        ResponseFuture {
            kind: ResponseKind::Called {
                future,
                recorder,
                classify,
            },
        }
    }

    pub(crate) fn rejected(error: BoxError) -> Self {
        ResponseFuture {
            kind: ResponseKind::Rejected { error: Some(error) },
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ResponseKind::Called { recorder, .. } => f
                .debug_struct("ResponseFuture")
                .field("recorder", recorder)
                .finish_non_exhaustive(),
            ResponseKind::Rejected { error } => f
                .debug_struct("ResponseFuture")
                .field("rejected", error)
                .finish(),
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            ResponseKindProj::Called {
                future,
                recorder,
                classify,
            } => {
                let result = ready!(future.poll(cx));
                if let Some(r) = recorder.take() {
                    r.finish(classify.classify(&result));
                }
                Poll::Ready(result.map_err(Into::into))
            }
            ResponseKindProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}
