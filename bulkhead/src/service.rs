//! The services: [`Bulkhead`], [`AdaptiveConcurrency`],
//! [`PartitionedBulkhead`] and [`Admission`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;
use watertight_core::ext::Extensions;
use watertight_core::{BoxError, Classify, ErrorsAsFailures};

use crate::admission::{AdmissionHandle, Throttle};
use crate::criticality::Criticality;
use crate::future::{AdaptiveFuture, AdmissionFuture, PartitionFuture, ResponseFuture};
use crate::handle::{AdaptiveHandle, BulkheadHandle};
use crate::limiter::{Limiter, Reservation};
use crate::partition::{PartitionedHandle, Partitioner, Partitions, Unpartitioned};

/// Bounds the calls in flight to an inner service; see the
/// [crate docs](crate).
///
/// # Clone
///
/// Clones share the bulkhead (its permits, queue and counters); each clone
/// reserves its own permit in `poll_ready`.
pub struct Bulkhead<S> {
    inner: S,
    limiter: Arc<Limiter>,
    reservation: Reservation,
}

impl<S: Clone> Clone for Bulkhead<S> {
    fn clone(&self) -> Self {
        Bulkhead::from_parts(self.inner.clone(), self.limiter.clone())
    }
}

impl<S: fmt::Debug> fmt::Debug for Bulkhead<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .field("reservation", &self.reservation)
            .finish()
    }
}

impl<S> Bulkhead<S> {
    pub(crate) fn from_parts(inner: S, limiter: Arc<Limiter>) -> Self {
        Bulkhead {
            inner,
            limiter,
            reservation: Reservation::default(),
        }
    }

    /// The bulkhead's handle.
    pub fn handle(&self) -> BulkheadHandle {
        BulkheadHandle {
            limiter: self.limiter.clone(),
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

    /// The inner service (a reserved permit is given back).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for Bulkhead<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        poll_reserved(&mut self.reservation, &self.limiter, &mut self.inner, cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self.reservation.take(&self.limiter) {
            Ok(permit) => ResponseFuture::called(self.inner.call(req), permit),
            Err(full) => ResponseFuture::rejected(full),
        }
    }
}

/// `poll_ready` of a service behind a limiter: a permit reserved (or a
/// rejection armed) as the limiter's mode says, then the inner service's
/// readiness, unless the call will be rejected without reaching it.
fn poll_reserved<S, Req>(
    reservation: &mut Reservation,
    limiter: &Arc<Limiter>,
    inner: &mut S,
    cx: &mut Context<'_>,
) -> Poll<Result<(), BoxError>>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    std::task::ready!(reservation.poll_reserve(limiter, cx));
    if reservation.is_rejecting() {
        return Poll::Ready(Ok(()));
    }
    inner.poll_ready(cx).map_err(Into::into)
}

/// Bounds the calls in flight to an inner service by a limit that adapts
/// to the service's latency and drops; see the [crate docs](crate) and
/// [`limit`](crate::limit).
///
/// # Clone
///
/// Clones share the limiter and its algorithm; each clone reserves its own
/// permit in `poll_ready`.
pub struct AdaptiveConcurrency<S, C = ErrorsAsFailures> {
    inner: S,
    limiter: Arc<Limiter>,
    reservation: Reservation,
    classify: C,
}

impl<S: Clone, C: Clone> Clone for AdaptiveConcurrency<S, C> {
    fn clone(&self) -> Self {
        AdaptiveConcurrency::from_parts(
            self.inner.clone(),
            self.limiter.clone(),
            self.classify.clone(),
        )
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for AdaptiveConcurrency<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveConcurrency")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .field("reservation", &self.reservation)
            .field("classify", &self.classify)
            .finish()
    }
}

impl<S, C> AdaptiveConcurrency<S, C> {
    pub(crate) fn from_parts(inner: S, limiter: Arc<Limiter>, classify: C) -> Self {
        debug_assert!(limiter.is_adaptive());
        AdaptiveConcurrency {
            inner,
            limiter,
            reservation: Reservation::default(),
            classify,
        }
    }

    /// The limiter's handle.
    pub fn handle(&self) -> AdaptiveHandle {
        AdaptiveHandle {
            limiter: self.limiter.clone(),
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

    /// The inner service (a reserved permit is given back).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, Req> Service<Req> for AdaptiveConcurrency<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = AdaptiveFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        poll_reserved(&mut self.reservation, &self.limiter, &mut self.inner, cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.reservation.take(&self.limiter) {
            Ok(permit) => AdaptiveFuture::called(
                self.inner.call(req),
                permit,
                Instant::now(),
                self.classify.clone(),
            ),
            Err(full) => AdaptiveFuture::rejected(full),
        }
    }
}

/// Bounds the calls in flight to an inner service by a total shared among
/// partitions, each with a guaranteed share, shedding the least critical
/// requests first; see [`partition`](crate::partition).
///
/// Always fail-fast: a request's partition and criticality are known only in
/// `call`, so `poll_ready` is the inner service's.
///
/// # Clone
///
/// Clones share the bulkhead.
#[derive(Clone)]
pub struct PartitionedBulkhead<S, P = Unpartitioned> {
    inner: S,
    partitions: Arc<Partitions>,
    partitioner: P,
}

impl<S: fmt::Debug, P: fmt::Debug> fmt::Debug for PartitionedBulkhead<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionedBulkhead")
            .field("inner", &self.inner)
            .field("partitions", &self.partitions)
            .field("partitioner", &self.partitioner)
            .finish()
    }
}

impl<S, P> PartitionedBulkhead<S, P> {
    pub(crate) fn from_parts(inner: S, partitions: Arc<Partitions>, partitioner: P) -> Self {
        PartitionedBulkhead {
            inner,
            partitions,
            partitioner,
        }
    }

    /// The bulkhead's handle.
    pub fn handle(&self) -> PartitionedHandle {
        PartitionedHandle {
            partitions: self.partitions.clone(),
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

impl<S, P, Req> Service<Req> for PartitionedBulkhead<S, P>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: Partitioner<Req>,
    Req: Extensions,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = PartitionFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let part = self.partitions.index(self.partitioner.partition(&req));
        match self.partitions.acquire(part, Criticality::of(&req)) {
            Ok(permit) => PartitionFuture::called(self.inner.call(req), permit),
            Err(full) => PartitionFuture::rejected(full),
        }
    }
}

/// Rejects requests locally, with a probability that grows as the backend
/// rejects more of them (client-side throttling); see
/// [`admission`](crate::admission).
///
/// # Clone
///
/// Clones share the window.
#[derive(Clone)]
pub struct Admission<S, C = ErrorsAsFailures> {
    inner: S,
    throttle: Arc<Throttle>,
    classify: C,
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for Admission<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("inner", &self.inner)
            .field("throttle", &self.throttle)
            .field("classify", &self.classify)
            .finish()
    }
}

impl<S, C> Admission<S, C> {
    pub(crate) fn from_parts(inner: S, throttle: Arc<Throttle>, classify: C) -> Self {
        Admission {
            inner,
            throttle,
            classify,
        }
    }

    /// The throttle's handle.
    pub fn handle(&self) -> AdmissionHandle {
        AdmissionHandle {
            throttle: self.throttle.clone(),
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

impl<S, C, Req> Service<Req> for Admission<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = AdmissionFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.throttle.admit() {
            Ok(()) => AdmissionFuture::called(
                self.inner.call(req),
                self.throttle.clone(),
                self.classify.clone(),
            ),
            Err(throttled) => AdmissionFuture::rejected(throttled),
        }
    }
}
