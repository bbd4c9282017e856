//! The limiter behind [`Bulkhead`](crate::Bulkhead) and
//! [`AdaptiveConcurrency`](crate::AdaptiveConcurrency): the semaphore, its
//! metrics and events, permits that give themselves back on drop, and the
//! per-service reservation that implements the modes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use metrics::{Counter, Gauge, Label};
use tokio::time::{Instant, Sleep};

use crate::config::{Mode, Order};
use crate::error::{Full, Reason};
use crate::event::{Cause, Event, LimitChanged, Listener, Rejected};
use crate::handle::Snapshot;
use crate::limit::{LimitAlgorithm, Sample};
use crate::semaphore::{Enqueued, Semaphore, Waiter};

pub(crate) const TARGET: &str = "watertight_bulkhead";

/// What a limiter is configured with, whatever layer built it.
pub(crate) struct Params {
    pub(crate) name: String,
    /// The metric-name component: `bulkhead` or `adaptive_concurrency`.
    pub(crate) component: &'static str,
    pub(crate) limit: u32,
    pub(crate) mode: Mode,
    pub(crate) max_queue: u32,
    pub(crate) max_wait: Duration,
    pub(crate) order: Order,
    pub(crate) retry_after: Duration,
    pub(crate) listener: Option<Listener>,
}

struct Metrics {
    in_flight: Gauge,
    queued: Gauge,
    limit: Gauge,
    admitted: Counter,
    at_limit: Counter,
    queue_full: Counter,
    wait_elapsed: Counter,
}

impl Metrics {
    fn new(component: &str, name: &str) -> Self {
        let labels = vec![Label::new("name", name.to_owned())];
        let rejected = |reason: &'static str| {
            let mut l = labels.clone();
            l.push(Label::new("reason", reason));
            metrics::counter!(format!("watertight_{component}_rejected_total"), l)
        };
        Metrics {
            in_flight: metrics::gauge!(format!("watertight_{component}_in_flight"), labels.clone()),
            queued: metrics::gauge!(format!("watertight_{component}_queued"), labels.clone()),
            limit: metrics::gauge!(format!("watertight_{component}_limit"), labels.clone()),
            admitted: metrics::counter!(
                format!("watertight_{component}_admitted_total"),
                labels.clone()
            ),
            at_limit: rejected(Reason::AtLimit.as_str()),
            queue_full: rejected(Reason::QueueFull.as_str()),
            wait_elapsed: rejected(Reason::WaitElapsed.as_str()),
        }
    }
}

/// The algorithm of an adaptive limiter, behind a lock taken once per
/// completed call.
type Algorithm = parking_lot::Mutex<Box<dyn LimitAlgorithm>>;

/// One limiter, shared by every clone of the services it guards, their
/// response futures and handles.
pub(crate) struct Limiter {
    pub(crate) sem: Semaphore,
    pub(crate) name: Arc<str>,
    pub(crate) mode: Mode,
    pub(crate) max_queue: u32,
    pub(crate) max_wait: Duration,
    pub(crate) retry_after: Duration,
    algorithm: Option<Algorithm>,
    admitted: AtomicU64,
    rejected: AtomicU64,
    timed_out: AtomicU64,
    limit_changes: AtomicU64,
    metrics: Metrics,
    listener: Option<Listener>,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("name", &self.name)
            .field("limit", &self.sem.limit())
            .field("in_flight", &self.sem.in_flight())
            .field("queued", &self.sem.waiting())
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter from validated parameters; adaptive when `algorithm` is
    /// given, starting at its initial limit.
    pub(crate) fn new(params: Params, algorithm: Option<Box<dyn LimitAlgorithm>>) -> Self {
        let limit = algorithm
            .as_ref()
            .map_or(params.limit, |a| clamp_limit(a.initial_limit()));
        let metrics = Metrics::new(params.component, &params.name);
        metrics.limit.set(f64::from(limit));
        metrics.in_flight.set(0.0);
        metrics.queued.set(0.0);
        Limiter {
            sem: Semaphore::new(limit, params.order == Order::Lifo),
            name: Arc::from(params.name.as_str()),
            mode: params.mode,
            max_queue: params.max_queue,
            max_wait: params.max_wait,
            retry_after: params.retry_after,
            algorithm: algorithm.map(parking_lot::Mutex::new),
            admitted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            limit_changes: AtomicU64::new(0),
            metrics,
            listener: params.listener,
        }
    }

    fn permit(self: &Arc<Self>, in_flight: u32) -> Permit {
        self.admitted.fetch_add(1, Relaxed);
        self.metrics.admitted.increment(1);
        self.metrics.in_flight.increment(1.0);
        Permit {
            limiter: self.clone(),
            in_flight,
        }
    }

    /// A permit if one is free and nobody is queued.
    #[inline]
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        self.sem.try_acquire().map(|n| self.permit(n))
    }

    fn release(&self) {
        if self.sem.release() {
            self.update_queued();
        }
        self.metrics.in_flight.decrement(1.0);
    }

    fn update_queued(&self) {
        self.metrics.queued.set(f64::from(self.sem.waiting()));
    }

    /// Counts a rejection and builds its error.
    #[cold]
    pub(crate) fn reject(&self, reason: Reason, waited: Duration) -> Full {
        let limit = self.sem.limit();
        self.rejected.fetch_add(1, Relaxed);
        match reason {
            Reason::QueueFull => self.metrics.queue_full.increment(1),
            Reason::WaitElapsed => {
                self.timed_out.fetch_add(1, Relaxed);
                self.metrics.wait_elapsed.increment(1)
            }
            _ => self.metrics.at_limit.increment(1),
        }
        tracing::trace!(target: TARGET, name = %self.name, %reason, limit, "rejected");
        if let Some(l) = &self.listener {
            l(&Event::Rejected(Rejected {
                name: self.name.clone(),
                partition: None,
                reason,
                limit,
            }));
        }
        Full::new(reason, limit, waited, self.retry_after)
    }

    /// Sets the limit; returns the previous one.
    pub(crate) fn set_limit(&self, limit: u32, cause: Cause) -> u32 {
        let old = self.sem.set_limit(limit);
        if old != limit {
            self.limit_changed(old, limit, cause);
        }
        old
    }

    fn limit_changed(&self, from: u32, to: u32, cause: Cause) {
        self.limit_changes.fetch_add(1, Relaxed);
        self.metrics.limit.set(f64::from(to));
        self.update_queued();
        match cause {
            Cause::Resized => {
                tracing::info!(target: TARGET, name = %self.name, from, to, "limit resized")
            }
            _ => tracing::debug!(target: TARGET, name = %self.name, from, to, "limit adapted"),
        }
        if let Some(l) = &self.listener {
            l(&Event::LimitChanged(LimitChanged {
                name: self.name.clone(),
                from,
                to,
                cause,
            }));
        }
    }

    /// Feeds one sample to the algorithm of an adaptive limiter.
    pub(crate) fn on_sample(&self, sample: &Sample) {
        let Some(algorithm) = &self.algorithm else {
            return;
        };
        // The limit is set under the algorithm's lock, so concurrent updates
        // reach the semaphore in the order the algorithm made them.
        let changed = {
            let mut a = algorithm.lock();
            let new = clamp_limit(a.update(sample));
            let old = self.sem.set_limit(new);
            (old != new).then_some((old, new))
        };
        if let Some((from, to)) = changed {
            self.limit_changed(from, to, Cause::Adapted);
        }
    }

    pub(crate) fn is_adaptive(&self) -> bool {
        self.algorithm.is_some()
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            limit: self.sem.limit(),
            in_flight: self.sem.in_flight(),
            queued: self.sem.waiting(),
            admitted: self.admitted.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            timed_out: self.timed_out.load(Relaxed),
            limit_changes: self.limit_changes.load(Relaxed),
        }
    }
}

/// Limits from an algorithm are kept in what the semaphore can count.
fn clamp_limit(limit: u32) -> u32 {
    limit.clamp(1, crate::error::check::MAX_LIMIT)
}

/// One permit; dropping it gives it back (to the next waiter, if any).
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
    in_flight: u32,
}

impl Permit {
    /// Permits in flight right after this one was taken (the sample's
    /// `in_flight` for adaptive limits).
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight
    }

    pub(crate) fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        self.limiter.release();
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("limiter", &self.limiter.name)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

/// A waiter in the queue; dropping it leaves the queue (and gives back a
/// permit handed to it in the meantime).
struct Queued {
    limiter: Arc<Limiter>,
    waiter: Option<Arc<Waiter>>,
    since: Instant,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl Queued {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Permit, Full>> {
        let Some(waiter) = &self.waiter else {
            // Resolved already; the reservation never polls it again.
            return Poll::Pending;
        };
        if let Poll::Ready(n) = waiter.poll_granted(cx) {
            self.waiter = None;
            self.limiter.update_queued();
            return Poll::Ready(Ok(self.limiter.permit(n)));
        }
        if let Some(deadline) = &mut self.deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                let waiter = self.waiter.take().expect("checked above");
                let granted = self.limiter.sem.cancel(&waiter);
                self.limiter.update_queued();
                return Poll::Ready(match granted {
                    Some(n) => Ok(self.limiter.permit(n)),
                    None => Err(self
                        .limiter
                        .reject(Reason::WaitElapsed, self.since.elapsed())),
                });
            }
        }
        Poll::Pending
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if let Some(waiter) = self.waiter.take() {
            if self.limiter.sem.cancel(&waiter).is_some() {
                // Handed a permit nobody will use: pass it on.
                self.limiter.release();
            }
            self.limiter.update_queued();
        }
    }
}

impl fmt::Debug for Queued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queued")
            .field("waiter", &self.waiter)
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

/// What one service instance holds between `poll_ready` and `call`.
#[derive(Debug, Default)]
pub(crate) struct Reservation {
    permit: Option<Permit>,
    rejection: Option<Full>,
    queued: Option<Queued>,
}

impl Reservation {
    /// Reserves a permit as the limiter's mode says. `Ready` means `call`
    /// may proceed: with a permit, with a rejection, or (fail-fast without
    /// a queue) with nothing, the permit being taken by `call`.
    pub(crate) fn poll_reserve(
        &mut self,
        limiter: &Arc<Limiter>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        loop {
            if self.permit.is_some() || self.rejection.is_some() {
                return Poll::Ready(());
            }
            if let Some(q) = &mut self.queued {
                let outcome = std::task::ready!(q.poll(cx));
                self.queued = None;
                match outcome {
                    Ok(p) => self.permit = Some(p),
                    Err(full) => self.rejection = Some(full),
                }
                continue;
            }
            let max_queue = match limiter.mode {
                Mode::FailFast if limiter.max_queue == 0 => return Poll::Ready(()),
                Mode::FailFast => limiter.max_queue,
                Mode::Backpressure => u32::MAX,
            };
            if let Some(p) = limiter.try_acquire() {
                self.permit = Some(p);
                continue;
            }
            match limiter.sem.enqueue(max_queue) {
                Enqueued::Acquired(n) => self.permit = Some(limiter.permit(n)),
                Enqueued::Full => {
                    self.rejection = Some(limiter.reject(Reason::QueueFull, Duration::ZERO))
                }
                Enqueued::Queued(waiter) => {
                    limiter.update_queued();
                    let deadline = (limiter.mode == Mode::FailFast)
                        .then(|| Box::pin(tokio::time::sleep(limiter.max_wait)));
                    self.queued = Some(Queued {
                        limiter: limiter.clone(),
                        waiter: Some(waiter),
                        since: Instant::now(),
                        deadline,
                    });
                }
            }
        }
    }

    /// The rejection `call` will return, if one is armed.
    pub(crate) fn is_rejecting(&self) -> bool {
        self.rejection.is_some()
    }

    /// Spends the reservation: its permit, its rejection, or (when nothing
    /// was reserved) a permit taken now.
    #[inline]
    pub(crate) fn take(&mut self, limiter: &Arc<Limiter>) -> Result<Permit, Full> {
        if let Some(p) = self.permit.take() {
            return Ok(p);
        }
        if let Some(full) = self.rejection.take() {
            return Err(full);
        }
        limiter
            .try_acquire()
            .ok_or_else(|| limiter.reject(Reason::AtLimit, Duration::ZERO))
    }
}
