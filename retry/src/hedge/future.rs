//! The response future of [`Hedge`](super::Hedge).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use pin_project::{pin_project, pinned_drop};
use tokio::time::{sleep_until, Instant, Sleep};
use tower_service::Service;
use watertight_core::BoxError;

use super::layer::HedgeShared;
use crate::budget::{Budget, Cause, Withdrawal};
use crate::policy::Policy;

/// The response future of [`Hedge`](super::Hedge): the original attempt
/// and its hedges in flight.
///
/// The first success wins; the other attempts are dropped (cancelled) at
/// once. Dropping the future cancels every attempt and gives back what the
/// hedges took from the budget.
#[pin_project(PinnedDrop)]
pub struct ResponseFuture<S, Req, B, P>
where
    S: Service<Req>,
    B: Budget,
{
    shared: Arc<HedgeShared<B, P>>,
    #[pin]
    kind: Kind<S, Req>,
}

#[pin_project(project = KindProj)]
enum Kind<S, Req>
where
    S: Service<Req>,
{
    Single {
        #[pin]
        future: S::Future,
        started: Instant,
    },
    Hedging {
        attempts: FuturesUnordered<Tracked<S::Future>>,
        /// When the next hedge is due; `None` once no more may be sent.
        #[pin]
        timer: Option<Sleep>,
        service: S,
        template: Req,
        /// Attempts sent, the original included.
        sent: u32,
        delay: Duration,
        /// A hedge the budget granted, waiting for the service.
        pending: Option<Withdrawal>,
        last: Option<Result<S::Response, BoxError>>,
        done: bool,
    },
}

#[pin_project]
struct Tracked<F> {
    #[pin]
    future: F,
    attempt: u32,
    started: Instant,
    withdrawal: Option<Withdrawal>,
}

impl<F: Future> Future for Tracked<F> {
    type Output = (F::Output, u32, Instant, Option<Withdrawal>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.future.poll(cx));
        Poll::Ready((out, *this.attempt, *this.started, this.withdrawal.take()))
    }
}

impl<S, Req, B, P> ResponseFuture<S, Req, B, P>
where
    S: Service<Req>,
    B: Budget,
{
    pub(crate) fn single(future: S::Future, shared: Arc<HedgeShared<B, P>>, now: Instant) -> Self {
        ResponseFuture {
            shared,
            kind: Kind::Single {
                future,
                started: now,
            },
        }
    }

    pub(crate) fn hedging(
        future: S::Future,
        shared: Arc<HedgeShared<B, P>>,
        service: S,
        template: Req,
        now: Instant,
        delay: Duration,
    ) -> Self {
        let attempts = FuturesUnordered::new();
        attempts.push(Tracked {
            future,
            attempt: 1,
            started: now,
            withdrawal: None,
        });
        ResponseFuture {
            shared,
            kind: Kind::Hedging {
                attempts,
                timer: Some(sleep_until(now + delay)),
                service,
                template,
                sent: 1,
                delay,
                pending: None,
                last: None,
                done: false,
            },
        }
    }
}

impl<S, Req, B, P> fmt::Debug for ResponseFuture<S, Req, B, P>
where
    S: Service<Req>,
    B: Budget,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ResponseFuture");
        match &self.kind {
            Kind::Single { .. } => d.field("hedging", &false),
            Kind::Hedging { attempts, sent, .. } => d
                .field("hedging", &true)
                .field("sent", sent)
                .field("in_flight", &attempts.len()),
        };
        d.finish_non_exhaustive()
    }
}

impl<S, Req, B, P> Future for ResponseFuture<S, Req, B, P>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    B: Budget,
    P: Policy<Req, S::Response>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let shared = &**this.shared;
        match this.kind.project() {
            KindProj::Single { future, started } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                let class = shared.policy.classify(&result);
                shared.budget.record(class, None);
                if class.is_success() {
                    let now = Instant::now();
                    shared.record_latency(now, now.saturating_duration_since(*started));
                }
                Poll::Ready(result)
            }
            KindProj::Hedging {
                attempts,
                mut timer,
                service,
                template,
                sent,
                delay,
                pending,
                last,
                done,
            } => {
                assert!(!*done, "hedge ResponseFuture polled after completion");
                let max_attempts = 1 + shared.config.max_hedged_attempts;
                loop {
                    while let Poll::Ready(Some((result, attempt, started, withdrawal))) =
                        attempts.poll_next_unpin(cx)
                    {
                        let result = result.map_err(Into::into);
                        let class = shared.policy.classify(&result);
                        if let Some(w) = withdrawal {
                            shared.budget.release(w);
                        }
                        shared.budget.record(class, withdrawal);
                        let now = Instant::now();
                        if class.is_success() {
                            shared.record_latency(now, now.saturating_duration_since(started));
                        }
                        if !class.is_retryable() {
                            if attempt > 1 {
                                shared.on_won(attempt);
                            }
                            cancel(shared, attempts, pending, Some(now));
                            *done = true;
                            return Poll::Ready(result);
                        }
                        *last = Some(result);
                    }
                    if attempts.is_empty() {
                        // Every attempt sent failed: hedging is for slow
                        // answers, retries are the retry layer's job.
                        cancel(shared, attempts, pending, Some(Instant::now()));
                        *done = true;
                        return Poll::Ready(
                            last.take().expect("an attempt completed before all did"),
                        );
                    }
                    if *sent >= max_attempts {
                        return Poll::Pending;
                    }
                    let Some(t) = timer.as_mut().as_pin_mut() else {
                        return Poll::Pending;
                    };
                    if pending.is_none() {
                        ready!(t.poll(cx));
                        match shared.budget.withdraw(Cause::Hedge) {
                            Some(w) => *pending = Some(w),
                            None => {
                                shared.on_refused(*sent + 1);
                                timer.set(None);
                                return Poll::Pending;
                            }
                        }
                    }
                    let req = match service.poll_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) => shared.policy.clone_request(template),
                        Poll::Ready(Err(_)) => None,
                    };
                    let Some(req) = req else {
                        // No hedge can be sent (the service failed, or the
                        // request cannot be copied); the attempts in flight
                        // may still answer.
                        if let Some(w) = pending.take() {
                            shared.budget.release(w);
                        }
                        timer.set(None);
                        return Poll::Pending;
                    };
                    let now = Instant::now();
                    *sent += 1;
                    attempts.push(Tracked {
                        future: service.call(req),
                        attempt: *sent,
                        started: now,
                        withdrawal: pending.take(),
                    });
                    shared.on_sent(*sent);
                    if *sent < max_attempts {
                        timer.set(Some(sleep_until(now + *delay)));
                    } else {
                        timer.set(None);
                    }
                }
            }
        }
    }
}

/// Drops (cancels) the attempts still in flight and gives back what they
/// took. When the request was answered (at `now`), a losing original
/// attempt has run at least the hedge delay: its time so far is recorded, a
/// lower bound that keeps slow answers in the histogram (without it, every
/// hedge that wins hides a tail latency and the percentile drifts down).
fn cancel<F, B: Budget, P>(
    shared: &HedgeShared<B, P>,
    attempts: &mut FuturesUnordered<Tracked<F>>,
    pending: &mut Option<Withdrawal>,
    now: Option<Instant>,
) {
    for t in Pin::new(&mut *attempts).iter_pin_mut() {
        let t = t.project();
        if let Some(w) = t.withdrawal.take() {
            shared.budget.release(w);
        }
        if let (1, Some(now)) = (*t.attempt, now) {
            shared.record_latency(now, now.saturating_duration_since(*t.started));
        }
    }
    attempts.clear();
    if let Some(w) = pending.take() {
        shared.budget.release(w);
    }
}

#[pinned_drop]
impl<S, Req, B, P> PinnedDrop for ResponseFuture<S, Req, B, P>
where
    S: Service<Req>,
    B: Budget,
{
    fn drop(self: Pin<&mut Self>) {
        let this = self.project();
        let shared = &**this.shared;
        if let KindProj::Hedging {
            attempts, pending, ..
        } = this.kind.project()
        {
            cancel(shared, attempts, pending, None);
        }
        shared.budget.finish();
    }
}
