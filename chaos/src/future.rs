//! The response futures of [`Chaos`](crate::Chaos) and
//! [`HttpChaos`](crate::HttpChaos).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Instant, Sleep};
use watertight_core::{BoxError, Classify};

use crate::error::Injected;
use crate::fault::Abort;
use crate::state::{observe, ActiveFault, Injection, Plan, Running};

/// Records a result with the steady-state guards of the plan the call saw.
pub(crate) struct Observer<C> {
    plan: Arc<Plan>,
    start: Instant,
    classify: C,
}

impl<C> Observer<C> {
    pub(crate) fn new(plan: Arc<Plan>, classify: C) -> Self {
        Observer {
            plan,
            start: Instant::now(),
            classify,
        }
    }

    fn finish<T>(self, result: &Result<T, BoxError>)
    where
        C: Classify<T, BoxError>,
    {
        let class = self.classify.classify(result);
        observe(&self.plan, class, Some(self.start.elapsed()));
    }
}

/// What the faulted part of a call produced.
pub(crate) enum Step<T> {
    Inner(T),
    Abort(Abort, Option<Arc<Running>>),
}

/// The faulted part of a call: wait (latency), hang until the experiment
/// ends, then answer in the inner service's place (abort) or go on to it.
#[pin_project]
pub(crate) struct Core<F> {
    #[pin]
    future: Option<F>,
    delay: Option<Pin<Box<Sleep>>>,
    hang: Option<(Pin<Box<OwnedNotified>>, Arc<Running>)>,
    abort: Option<(Abort, Option<Arc<Running>>)>,
}

impl<F> Core<F> {
    /// The core for `injection`, calling the inner service unless the
    /// request is aborted, with the fault's `max_active_faults` slot.
    pub(crate) fn new(
        injection: Option<Injection>,
        call: impl FnOnce(()) -> F,
    ) -> (Self, Option<ActiveFault>) {
        let Some(mut inj) = injection else {
            let core = Core {
                future: Some(call(())),
                delay: None,
                hang: None,
                abort: None,
            };
            return (core, None);
        };
        let hang = inj.hang.take().and_then(|run| {
            let notified = Box::pin(run.end.clone().notified_owned());
            // Ended before we listened: no hang.
            (!run.has_ended()).then_some((notified, run))
        });
        // A hang wins: when its experiment ends the request goes on.
        let abort = if hang.is_some() {
            None
        } else {
            inj.abort.take()
        };
        let core = Core {
            future: abort.is_none().then(|| call(())),
            delay: inj
                .delay
                .filter(|_| hang.is_none())
                .map(|d| Box::pin(tokio::time::sleep(d))),
            hang,
            abort,
        };
        (core, inj.slot.take())
    }
}

impl<F: Future> Core<F> {
    fn poll_step(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Step<F::Output>> {
        let mut this = self.project();
        if let Some(sleep) = this.delay {
            ready!(sleep.as_mut().poll(cx));
            *this.delay = None;
        }
        if let Some((notified, run)) = this.hang {
            if !run.has_ended() {
                ready!(notified.as_mut().poll(cx));
            }
            *this.hang = None;
        }
        if let Some((abort, run)) = this.abort.take() {
            return Poll::Ready(Step::Abort(abort, run));
        }
        let future = this
            .future
            .as_mut()
            .as_pin_mut()
            .expect("ResponseFuture polled after completion");
        let out = ready!(future.poll(cx));
        this.future.set(None);
        Poll::Ready(Step::Inner(out))
    }
}

fn injected(abort: Abort, run: Option<&Arc<Running>>) -> Injected {
    let name = run.map(|r| r.name());
    match abort {
        Abort::Http(s) => Injected::new(name, Some(s), None),
        Abort::Grpc(g) => Injected::new(name, None, Some(g)),
        Abort::Error => Injected::new(name, None, None),
    }
}

/// The response future of [`Chaos`](crate::Chaos).
#[pin_project]
pub struct ResponseFuture<F, C> {
    #[pin]
    kind: Kind<F, C>,
}

#[pin_project(project = KindProj)]
enum Kind<F, C> {
    Plain {
        #[pin]
        future: F,
    },
    // Boxed: the disabled path's future stays as small as the inner one.
    Chaos(Pin<Box<Faulted<F, C>>>),
}

#[pin_project]
struct Faulted<F, C> {
    #[pin]
    core: Core<F>,
    observer: Option<Observer<C>>,
    slot: Option<ActiveFault>,
}

impl<F, C> ResponseFuture<F, C> {
    #[inline]
    pub(crate) fn plain(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Plain { future },
        }
    }

    pub(crate) fn chaos(
        core: Core<F>,
        observer: Option<Observer<C>>,
        slot: Option<ActiveFault>,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Chaos(Box::pin(Faulted {
                core,
                observer,
                slot,
            })),
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Plain { .. } => "plain",
            Kind::Chaos(_) => "chaos",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Plain { future } => future.poll(cx).map_err(Into::into),
            KindProj::Chaos(state) => {
                let this = state.as_mut().project();
                let result = match ready!(this.core.poll_step(cx)) {
                    Step::Inner(r) => r.map_err(Into::into),
                    Step::Abort(a, run) => Err(injected(a, run.as_ref()).into()),
                };
                this.slot.take();
                if let Some(o) = this.observer.take() {
                    o.finish(&result);
                }
                Poll::Ready(result)
            }
        }
    }
}

#[cfg(feature = "http")]
pub use self::http_future::HttpResponseFuture;

#[cfg(feature = "http")]
mod http_future {
    use super::*;
    use crate::body::{BodyFaults, ChaosBody};

    /// The response future of [`HttpChaos`](crate::HttpChaos).
    #[pin_project]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub struct HttpResponseFuture<F, C> {
        #[pin]
        kind: HttpKind<F, C>,
    }

    #[pin_project(project = HttpKindProj)]
    enum HttpKind<F, C> {
        Plain {
            #[pin]
            future: F,
        },
        Chaos(Pin<Box<HttpFaulted<F, C>>>),
    }

    #[pin_project(project = HttpFaultedProj)]
    struct HttpFaulted<F, C> {
        #[pin]
        core: Core<F>,
        observer: Option<Observer<C>>,
        slot: Option<ActiveFault>,
        body: BodyFaults,
    }

    impl<F, C> HttpResponseFuture<F, C> {
        #[inline]
        pub(crate) fn plain(future: F) -> Self {
            HttpResponseFuture {
                kind: HttpKind::Plain { future },
            }
        }

        pub(crate) fn chaos(
            core: Core<F>,
            observer: Option<Observer<C>>,
            slot: Option<ActiveFault>,
            body: BodyFaults,
        ) -> Self {
            HttpResponseFuture {
                kind: HttpKind::Chaos(Box::pin(HttpFaulted {
                    core,
                    observer,
                    slot,
                    body,
                })),
            }
        }
    }

    impl<F, C> fmt::Debug for HttpResponseFuture<F, C> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let kind = match &self.kind {
                HttpKind::Plain { .. } => "plain",
                HttpKind::Chaos(_) => "chaos",
            };
            f.debug_struct("HttpResponseFuture")
                .field("kind", &kind)
                .finish_non_exhaustive()
        }
    }

    fn grpc_abort<B>(code: u16) -> http::Response<ChaosBody<B>> {
        let mut res = http::Response::new(ChaosBody::empty());
        let h = res.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", http::HeaderValue::from(code));
        h.insert(
            "grpc-message",
            http::HeaderValue::from_static("fault%20injected"),
        );
        res
    }

    impl<F, C, B, E> Future for HttpResponseFuture<F, C>
    where
        F: Future<Output = Result<http::Response<B>, E>>,
        E: Into<BoxError>,
        B: http_body::Body,
        C: Classify<http::Response<ChaosBody<B>>, BoxError>,
    {
        type Output = Result<http::Response<ChaosBody<B>>, BoxError>;

        #[inline]
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match self.project().kind.project() {
                HttpKindProj::Plain { future } => {
                    let res = ready!(future.poll(cx)).map_err(Into::into)?;
                    Poll::Ready(Ok(res.map(ChaosBody::plain)))
                }
                HttpKindProj::Chaos(state) => {
                    let HttpFaultedProj {
                        core,
                        observer,
                        slot,
                        body,
                    } = state.as_mut().project();
                    let result = match ready!(core.poll_step(cx)) {
                        Step::Inner(Ok(res)) => {
                            let faults = std::mem::replace(body, BodyFaults::NONE);
                            let slot = if faults.is_some() { slot.take() } else { None };
                            Ok(res.map(|b| ChaosBody::faulted(b, faults, slot)))
                        }
                        Step::Inner(Err(e)) => Err(e.into()),
                        Step::Abort(Abort::Http(status), _) => {
                            let mut res = http::Response::new(ChaosBody::empty());
                            *res.status_mut() = http::StatusCode::from_u16(status)
                                .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
                            Ok(res)
                        }
                        Step::Abort(Abort::Grpc(code), _) => Ok(grpc_abort(code)),
                        Step::Abort(a, run) => Err(injected(a, run.as_ref()).into()),
                    };
                    slot.take();
                    if let Some(o) = observer.take() {
                        o.finish(&result);
                    }
                    Poll::Ready(result)
                }
            }
        }
    }
}
