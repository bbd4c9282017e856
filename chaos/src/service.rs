use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::cache::Cache;
use arc_swap::ArcSwap;
use rand::rngs::SmallRng;
use tower_service::Service;
use watertight_core::{BoxError, ErrorsAsFailures};

use crate::future::{Core, Observer, ResponseFuture};
use crate::state::{Injection, Plan, Shared, Unavailable};
use crate::target::Inspect;

/// What the services of both kinds share: the controller, the random
/// stream, and the state of `poll_ready`.
pub(crate) struct Engine {
    shared: Arc<Shared>,
    /// The plan, re-read only when the controller publishes a new one.
    plan: Cache<Arc<ArcSwap<Plan>>, Arc<Plan>>,
    rng: SmallRng,
    /// The `unavailable` dice were rolled since the last armed call.
    rolled: bool,
    unavailable: Option<Unavailable>,
}

/// What `call` found to do.
pub(crate) struct Begin {
    pub(crate) injection: Option<Injection>,
    pub(crate) observe: Option<Arc<Plan>>,
}

impl Engine {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Engine {
            rng: shared.rng(),
            plan: Cache::new(shared.plan.clone()),
            shared,
            rolled: false,
            unavailable: None,
        }
    }

    #[inline]
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.unavailable.is_none() && !self.shared.armed.load(Ordering::Relaxed) {
            return Poll::Ready(());
        }
        self.poll_unavailable(cx)
    }

    fn poll_unavailable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(u) = &mut self.unavailable {
            if u.poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.unavailable = None;
            return Poll::Ready(());
        }
        if self.rolled {
            return Poll::Ready(());
        }
        self.rolled = true;
        let plan = self.plan.load();
        if !plan.unavailable {
            return Poll::Ready(());
        }
        match self.shared.decide_unavailable(plan, &mut self.rng) {
            Some(mut u) => {
                // Registers the waker with the period's timer.
                if u.poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                self.unavailable = Some(u);
                Poll::Pending
            }
            None => Poll::Ready(()),
        }
    }

    /// `None` on the disabled path: the controller was not armed.
    #[inline]
    pub(crate) fn begin<R: Inspect + ?Sized>(&mut self, req: &R, body: bool) -> Option<Begin> {
        if !self.shared.armed.load(Ordering::Relaxed) {
            return None;
        }
        self.rolled = false;
        self.begin_armed(req, body)
    }

    fn begin_armed<R: Inspect + ?Sized>(&mut self, req: &R, body: bool) -> Option<Begin> {
        let plan = self.plan.load();
        let injection = self.shared.decide(plan, req, &mut self.rng, body);
        let observe = plan.guarded.then(|| plan.clone());
        if injection.is_none() && observe.is_none() {
            return None;
        }
        Some(Begin { injection, observe })
    }
}

impl Clone for Engine {
    fn clone(&self) -> Self {
        Engine::new(self.shared.clone())
    }
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("controller", &self.shared.name)
            .field("unavailable", &self.unavailable.is_some())
            .finish()
    }
}

/// Injects the faults of a [`ChaosController`](crate::ChaosController)'s
/// experiments into any service whose requests implement [`Inspect`].
///
/// Latency, aborts (as [`error::Injected`](crate::error::Injected)), hangs
/// and unavailability apply; the body faults (`throttle`, `truncate`) need
/// [`HttpChaos`]. With no experiment running and header faults off, the
/// layer costs one relaxed atomic load in `poll_ready` and one in `call`,
/// and its response future is the inner one.
///
/// `poll_ready` decides on `unavailable` faults; `call` draws the
/// request's faults from the controller's current plan (re-read only when
/// the controller publishes a new one).
///
/// # Clone
///
/// Clones share the controller; each draws its own random numbers and has
/// its own `poll_ready` state.
#[derive(Clone, Debug)]
pub struct Chaos<S, C = ErrorsAsFailures> {
    inner: S,
    engine: Engine,
    classify: C,
}

/// Construction and access to the inner service, the same for [`Chaos`]
/// and `HttpChaos`.
macro_rules! inner_service {
    ($service:ident) => {
        impl<S, C> $service<S, C> {
            pub(crate) fn from_parts(inner: S, shared: Arc<Shared>, classify: C) -> Self {
                $service {
                    inner,
                    engine: Engine::new(shared),
                    classify,
                }
            }

            /// The inner service.
            pub fn get_ref(&self) -> &S {
                &self.inner
            }

            /// The inner service, mutably.
            pub fn get_mut(&mut self) -> &mut S {
                &mut self.inner
            }

            /// The inner service.
            pub fn into_inner(self) -> S {
                self.inner
            }
        }
    };
}

inner_service!(Chaos);

impl<S, C, Req> Service<Req> for Chaos<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Req: Inspect,
    C: watertight_core::Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        std::task::ready!(self.engine.poll_ready(cx));
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self.engine.begin(&req, false) {
            None => ResponseFuture::plain(self.inner.call(req)),
            Some(begin) => {
                let observer = begin
                    .observe
                    .map(|p| Observer::new(p, self.classify.clone()));
                let (core, slot) = Core::new(begin.injection, |_| self.inner.call(req));
                ResponseFuture::chaos(core, observer, slot)
            }
        }
    }
}

#[cfg(feature = "http")]
pub use self::http_service::HttpChaos;

#[cfg(feature = "http")]
mod http_service {
    use super::*;
    use crate::body::BodyFaults;
    use crate::future::HttpResponseFuture;
    use watertight_core::classify::ServerErrorsAsFailures;

    /// Injects the faults of a
    /// [`ChaosController`](crate::ChaosController)'s experiments into an
    /// `http` service, client or server.
    ///
    /// Besides what [`Chaos`] does, an abort with a `status` answers an
    /// HTTP response with that status, an abort with a `grpc_status`
    /// answers a gRPC trailers-only response (HTTP 200,
    /// `content-type: application/grpc`, `grpc-status` and `grpc-message`
    /// headers, no body), and the body faults `throttle` and `truncate`
    /// act on the response body, which is why the response body becomes a
    /// [`ChaosBody`](crate::ChaosBody).
    ///
    /// # Clone
    ///
    /// As [`Chaos`].
    #[derive(Clone, Debug)]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub struct HttpChaos<S, C = ServerErrorsAsFailures> {
        inner: S,
        engine: Engine,
        classify: C,
    }

    inner_service!(HttpChaos);

    impl<S, C, ReqB, ResB> Service<http::Request<ReqB>> for HttpChaos<S, C>
    where
        S: Service<http::Request<ReqB>, Response = http::Response<ResB>>,
        S::Error: Into<BoxError>,
        ResB: http_body::Body,
        C: watertight_core::Classify<http::Response<crate::ChaosBody<ResB>>, BoxError> + Clone,
    {
        type Response = http::Response<crate::ChaosBody<ResB>>;
        type Error = BoxError;
        type Future = HttpResponseFuture<S::Future, C>;

        #[inline]
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            std::task::ready!(self.engine.poll_ready(cx));
            self.inner.poll_ready(cx).map_err(Into::into)
        }

        #[inline]
        fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
            match self.engine.begin(&req, true) {
                None => HttpResponseFuture::plain(self.inner.call(req)),
                Some(begin) => {
                    let observer = begin
                        .observe
                        .map(|p| Observer::new(p, self.classify.clone()));
                    let body = begin.injection.as_ref().map_or(BodyFaults::NONE, |i| {
                        BodyFaults::new(i.throttle, i.truncate)
                    });
                    let (core, slot) = Core::new(begin.injection, |_| self.inner.call(req));
                    HttpResponseFuture::chaos(core, observer, slot, body)
                }
            }
        }
    }
}
