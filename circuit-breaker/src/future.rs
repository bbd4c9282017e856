//! The response future of [`CircuitBreaker`](crate::CircuitBreaker) and
//! [`KeyedCircuitBreaker`](crate::KeyedCircuitBreaker).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;
use watertight_core::{BoxError, Classify};

use crate::breaker::{Admission, Breaker};
use crate::probe::Permit;
use crate::state::{generation_of, pack, state_of};
use crate::State;

/// Records one admitted call's result with its breaker. Dropped without a
/// result (the call was cancelled), it counts nothing and gives back its
/// probe permit.
///
/// Three words, all plain integers besides the breaker, so building and
/// moving the response future stays cheap: the state word the call was
/// admitted in (`HalfOpen` for a probe, whose permit the recorder then owns)
/// and the start time when the slow-call policy needs one.
struct Recorder {
    breaker: Arc<Breaker>,
    word: u64,
    start: u64,
}

/// A word no call is admitted in: a finished recorder holds it, so that
/// dropping it releases nothing.
const DONE: u64 = pack(State::Closed, u64::MAX >> 3);

impl Recorder {
    #[inline]
    fn admitted(breaker: Arc<Breaker>, word: u64) -> Self {
        let start = breaker.start();
        Recorder {
            breaker,
            word,
            start,
        }
    }

    fn probe(breaker: Arc<Breaker>, permit: Permit) -> Self {
        let word = pack(State::HalfOpen, permit.into_generation());
        let start = breaker.start();
        Recorder {
            breaker,
            word,
            start,
        }
    }

    /// Records the result, once. In place: moving the recorder out of a
    /// future built an instant ago would read back its fields while their
    /// stores are still in flight, which costs more than the recording.
    #[inline]
    fn finish(&mut self, class: watertight_core::ResponseClass) {
        let word = std::mem::replace(&mut self.word, DONE);
        if word == DONE {
            return;
        }
        if state_of(word) == State::HalfOpen {
            self.breaker
                .complete_probe(generation_of(word), class, self.start);
        } else {
            self.breaker.complete(word, class, self.start);
        }
    }
}

impl Drop for Recorder {
    #[inline]
    fn drop(&mut self) {
        if state_of(self.word) == State::HalfOpen {
            self.breaker.probe_cancelled(generation_of(self.word));
        }
    }
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("breaker", &self.breaker)
            .field("state", &state_of(self.word))
            .field("generation", &generation_of(self.word))
            .finish()
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
    fn called(future: F, recorder: Option<Recorder>, classify: C) -> Self {
        ResponseFuture {
            kind: ResponseKind::Called {
                future,
                recorder,
                classify,
            },
        }
    }

    /// The future of a call `admission` decided on: `call` made with what
    /// records its result, or the rejection, counted, without `call`.
    #[inline]
    pub(crate) fn admitted(
        breaker: &Arc<Breaker>,
        admission: Admission,
        call: impl FnOnce() -> F,
        classify: &C,
    ) -> Self
    where
        C: Clone,
    {
        let recorder = match admission {
            Admission::Admit(word) => Some(Recorder::admitted(breaker.clone(), word)),
            Admission::Pass => None,
            Admission::Probe(permit) => Some(Recorder::probe(breaker.clone(), permit)),
            Admission::Reject(open) => {
                breaker.count_rejection(&open);
                return ResponseFuture::rejected(Box::new(open));
            }
        };
        ResponseFuture::called(call(), recorder, classify.clone())
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
                if let Some(r) = recorder {
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
