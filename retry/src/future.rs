//! The response future of [`Retry`](crate::Retry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project::{pin_project, pinned_drop};
use tokio::time::{sleep_until, Instant, Sleep};
use tower_service::Service;
use watertight_core::{BoxError, Extensions, Hint, ResponseClass};

use crate::budget::{Budget, Cause, Withdrawal};
use crate::deadline::Deadline;
use crate::error::{AttemptTimedOut, DeadlineExceeded};
use crate::mark::{is_exhausted, mark, Reason};
use crate::policy::Policy;
use crate::shared::Shared;

/// What the service decided for a request when it entered.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) idempotent: bool,
    /// The overall deadline.
    pub(crate) deadline: Option<Instant>,
}

/// When an attempt starting at `now` times out: after the per-try timeout
/// or at the overall deadline, whichever is earlier. Noted on the attempt's
/// request as its [`Deadline`]. The clock is read only for a per-try
/// timeout, and only when `now` is not known.
pub(crate) fn attempt_deadline<Req: Extensions>(
    req: &mut Req,
    per_try_timeout: Option<Duration>,
    deadline: Option<Instant>,
    now: Option<Instant>,
) -> Option<Instant> {
    let end = match per_try_timeout {
        Some(t) => earliest(now.unwrap_or_else(Instant::now).checked_add(t), deadline),
        None => deadline,
    };
    if let Some(end) = end {
        if req.carries_extensions() {
            req.insert_extension(Deadline::at(end));
        }
    }
    end
}

/// Whether an attempt starting at `start` would have less than `floor` left
/// before `deadline`.
pub(crate) fn too_late(deadline: Instant, start: Instant, floor: Duration) -> bool {
    deadline.saturating_duration_since(start) < floor
}

pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The response future of [`Retry`](crate::Retry): the current attempt, or
/// the backoff before the next one.
///
/// Dropping it cancels the attempt in flight and gives back what it took
/// from the budget.
#[pin_project(PinnedDrop)]
pub struct ResponseFuture<S, Req, B, P>
where
    S: Service<Req>,
    B: Budget,
{
    #[pin]
    state: State<S::Future>,
    /// The attempt's timeout, the backoff, or the deadline while waiting
    /// for the service: whichever the state waits on.
    #[pin]
    timer: Option<Sleep>,
    shared: Arc<Shared<B, P>>,
    service: Option<S>,
    template: Option<Req>,
    next: Option<Req>,
    attempts: u32,
    plan: Plan,
    withdrawal: Option<Withdrawal>,
    prev_delay: Duration,
}

#[pin_project(project = StateProj)]
enum State<F> {
    Attempt {
        #[pin]
        future: F,
    },
    Backoff,
    Ready,
    Rejected,
    Done,
}

impl<S, Req, B, P> ResponseFuture<S, Req, B, P>
where
    S: Service<Req>,
    B: Budget,
{
    #[inline]
    pub(crate) fn new(
        future: S::Future,
        shared: Arc<Shared<B, P>>,
        service: Option<S>,
        template: Option<Req>,
        plan: Plan,
        attempt_end: Option<Instant>,
    ) -> Self {
        let timer = attempt_end.map(sleep_until);
        ResponseFuture {
            state: State::Attempt { future },
            timer,
            prev_delay: shared.config.backoff.base(),
            shared,
            service,
            template,
            next: None,
            attempts: 1,
            plan,
            withdrawal: None,
        }
    }

    /// A request whose deadline left too little time for a first attempt.
    pub(crate) fn rejected(shared: Arc<Shared<B, P>>, deadline: Option<Instant>) -> Self {
        ResponseFuture {
            state: State::Rejected,
            timer: None,
            prev_delay: shared.config.backoff.base(),
            shared,
            service: None,
            template: None,
            next: None,
            attempts: 0,
            plan: Plan {
                idempotent: false,
                deadline,
            },
            withdrawal: None,
        }
    }
}

impl<S, Req, B, P> fmt::Debug for ResponseFuture<S, Req, B, P>
where
    S: Service<Req>,
    B: Budget,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Attempt { .. } => "attempt",
            State::Backoff => "backoff",
            State::Ready => "ready",
            State::Rejected => "rejected",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempts", &self.attempts)
            .field("withdrawal", &self.withdrawal)
            .finish_non_exhaustive()
    }
}

/// A retry the decision granted.
struct Granted<Req> {
    next: Req,
    delay: Duration,
    withdrawal: Withdrawal,
    server_delay: Option<Duration>,
}

impl<S, Req, B, P> Future for ResponseFuture<S, Req, B, P>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Response: Extensions,
    Req: Extensions,
    B: Budget,
    P: Policy<Req, S::Response>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Attempt { future } => {
                    let (result, cause) = match future.poll(cx) {
                        Poll::Ready(r) => (r.map_err(Into::into), Cause::Retry),
                        Poll::Pending => {
                            let Some(timer) = this.timer.as_mut().as_pin_mut() else {
                                return Poll::Pending;
                            };
                            ready!(timer.poll(cx));
                            // Cancel the attempt.
                            this.state.set(State::Done);
                            if this.plan.deadline.is_some_and(|d| Instant::now() >= d) {
                                if let Some(w) = this.withdrawal.take() {
                                    this.shared.budget.release(w);
                                }
                                return Poll::Ready(deadline_exceeded(this.shared, *this.attempts));
                            }
                            let after = this.shared.config.per_try_timeout.unwrap_or_default();
                            let err: BoxError = Box::new(AttemptTimedOut::new(after));
                            (Err(err), Cause::Timeout)
                        }
                    };
                    this.state.set(State::Done);
                    this.timer.set(None);

                    let shared = &**this.shared;
                    let class = match cause {
                        Cause::Timeout => ResponseClass::RETRYABLE,
                        _ => shared.policy.classify(&result),
                    };
                    shared.budget.record(class, *this.withdrawal);
                    if let Some(w) = this.withdrawal.take() {
                        shared.budget.release(w);
                    }
                    if !class.is_retryable() || is_exhausted(&result) {
                        return Poll::Ready(result);
                    }

                    let hint = match cause {
                        Cause::Timeout => None,
                        _ => shared.policy.hint(&result),
                    };
                    let decision = decide(
                        shared,
                        cause,
                        hint,
                        *this.attempts,
                        this.plan,
                        this.template,
                        this.prev_delay,
                    );
                    match decision {
                        Err(reason) => {
                            return Poll::Ready(give_up(shared, result, reason, *this.attempts));
                        }
                        Ok(granted) => {
                            // The failed response is released before the wait.
                            drop(result);
                            shared.on_retry(
                                *this.attempts + 1,
                                granted.delay,
                                cause,
                                granted.server_delay,
                            );
                            *this.next = Some(granted.next);
                            *this.withdrawal = Some(granted.withdrawal);
                            if granted.delay.is_zero() {
                                this.timer.set(this.plan.deadline.map(sleep_until));
                                this.state.set(State::Ready);
                            } else {
                                this.timer
                                    .set(Some(sleep_until(Instant::now() + granted.delay)));
                                this.state.set(State::Backoff);
                            }
                        }
                    }
                }
                StateProj::Backoff => {
                    if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                        ready!(timer.poll(cx));
                    }
                    this.timer.set(this.plan.deadline.map(sleep_until));
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    let service = this
                        .service
                        .as_mut()
                        .expect("a retried request keeps its service");
                    match service.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(e.into()));
                        }
                        Poll::Pending => {
                            if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                                ready!(timer.poll(cx));
                                this.state.set(State::Done);
                                return Poll::Ready(deadline_exceeded(this.shared, *this.attempts));
                            }
                            return Poll::Pending;
                        }
                    }
                    let now = this.plan.deadline.map(|_| Instant::now());
                    if let (Some(d), Some(n)) = (this.plan.deadline, now) {
                        // Waiting for the service ate into the deadline.
                        if too_late(d, n, this.shared.config.min_remaining) {
                            this.state.set(State::Done);
                            return Poll::Ready(deadline_exceeded(this.shared, *this.attempts));
                        }
                    }
                    let mut req = this.next.take().expect("a retry has its request");
                    *this.attempts += 1;
                    let attempt_end = attempt_deadline(
                        &mut req,
                        this.shared.config.per_try_timeout,
                        this.plan.deadline,
                        now,
                    );
                    this.timer.set(attempt_end.map(sleep_until));
                    let future = service.call(req);
                    this.state.set(State::Attempt { future });
                }
                StateProj::Rejected => {
                    this.state.set(State::Done);
                    return Poll::Ready(deadline_exceeded(this.shared, 0));
                }
                StateProj::Done => panic!("retry ResponseFuture polled after completion"),
            }
        }
    }
}

/// Whether and how to retry a retryable failure; the reason to stop
/// otherwise. The budget is asked last, so a retry that would not be sent
/// takes nothing from it.
fn decide<Req, Res, B, P>(
    shared: &Shared<B, P>,
    cause: Cause,
    hint: Option<Hint>,
    attempts: u32,
    plan: &Plan,
    template: &Option<Req>,
    prev_delay: &mut Duration,
) -> Result<Granted<Req>, Reason>
where
    B: Budget,
    P: Policy<Req, Res>,
{
    let config = &shared.config;
    if !shared.enabled.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(Reason::Disabled);
    }
    let server_delay = match hint {
        Some(Hint::DoNotRetry) => return Err(Reason::DoNotRetry),
        Some(Hint::RetryAfter(d)) => Some(d),
        None => None,
    };
    if !plan.idempotent {
        return Err(Reason::NotIdempotent);
    }
    if attempts >= config.max_attempts {
        return Err(Reason::Attempts);
    }
    if server_delay.is_some_and(|d| d > config.max_server_delay) {
        return Err(Reason::ServerDelay);
    }
    let next = template
        .as_ref()
        .and_then(|t| shared.policy.clone_request(t))
        .ok_or(Reason::NotReplayable)?;
    let backoff = shared.backoff(attempts - 1, *prev_delay);
    let delay = backoff.max(server_delay.unwrap_or_default());
    if plan
        .deadline
        .is_some_and(|d| too_late(d, Instant::now() + delay, config.min_remaining))
    {
        return Err(Reason::Deadline);
    }
    let withdrawal = shared.budget.withdraw(cause).ok_or(Reason::Budget)?;
    *prev_delay = backoff;
    Ok(Granted {
        next,
        delay,
        withdrawal,
        server_delay,
    })
}

/// Ends a request whose deadline passed, or left too little time for
/// another attempt.
fn deadline_exceeded<Res: Extensions, B: Budget, P>(
    shared: &Shared<B, P>,
    attempts: u32,
) -> Result<Res, BoxError> {
    let err: BoxError = Box::new(DeadlineExceeded::new());
    give_up(shared, Err(err), Reason::Deadline, attempts)
}

fn give_up<Res: Extensions, B: Budget, P>(
    shared: &Shared<B, P>,
    result: Result<Res, BoxError>,
    reason: Reason,
    attempts: u32,
) -> Result<Res, BoxError> {
    shared.on_give_up(reason, attempts);
    mark(result, reason, attempts)
}

#[pinned_drop]
impl<S, Req, B, P> PinnedDrop for ResponseFuture<S, Req, B, P>
where
    S: Service<Req>,
    B: Budget,
{
    fn drop(self: Pin<&mut Self>) {
        let this = self.project();
        if let Some(w) = this.withdrawal.take() {
            this.shared.budget.release(w);
        }
        this.shared.budget.finish();
    }
}
