//! Observing and controlling a limiter at run time.

use std::sync::Arc;

use crate::error::{check, ConfigError};
use crate::event::Cause;
use crate::limiter::Limiter;

/// A limiter's state and counters at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The concurrency limit.
    pub limit: u32,
    /// Permits held (may exceed the limit right after it was lowered).
    pub in_flight: u32,
    /// Requests waiting in the queue.
    pub queued: u32,
    /// Requests admitted since the limiter was built.
    pub admitted: u64,
    /// Requests rejected since the limiter was built.
    pub rejected: u64,
    /// Of those, rejected after waiting `max_wait` in the queue.
    pub timed_out: u64,
    /// Times the limit changed.
    pub limit_changes: u64,
}

/// Observes and resizes one [`Bulkhead`](crate::Bulkhead).
///
/// # Clone
///
/// Cheap: clones share the bulkhead (an `Arc`), as do the services it came
/// from.
#[derive(Clone, Debug)]
pub struct BulkheadHandle {
    pub(crate) limiter: Arc<Limiter>,
}

impl BulkheadHandle {
    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.limiter.name
    }

    /// The concurrency limit.
    pub fn limit(&self) -> u32 {
        self.limiter.sem.limit()
    }

    /// Permits held.
    pub fn in_flight(&self) -> u32 {
        self.limiter.sem.in_flight()
    }

    /// Requests waiting in the queue.
    pub fn queued(&self) -> u32 {
        self.limiter.sem.waiting()
    }

    /// The state and counters at this instant.
    pub fn snapshot(&self) -> Snapshot {
        self.limiter.snapshot()
    }

    /// Sets the concurrency limit, while calls are in flight or not.
    ///
    /// Raising it hands the new permits to queued requests at once.
    /// Lowering it revokes nothing: calls in flight finish, and new ones are
    /// admitted only once fewer than the new limit are in flight.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `max_concurrent` unless it is in `1..=2^30`.
    pub fn resize(&self, max_concurrent: u32) -> Result<(), ConfigError> {
        check::limit("max_concurrent", max_concurrent)?;
        self.limiter.set_limit(max_concurrent, Cause::Resized);
        Ok(())
    }

    /// Whether two handles control the same bulkhead.
    pub fn same_bulkhead(&self, other: &BulkheadHandle) -> bool {
        Arc::ptr_eq(&self.limiter, &other.limiter)
    }
}

/// Observes one [`AdaptiveConcurrency`](crate::AdaptiveConcurrency).
///
/// # Clone
///
/// Cheap: clones share the limiter (an `Arc`), as do the services it came
/// from.
#[derive(Clone, Debug)]
pub struct AdaptiveHandle {
    pub(crate) limiter: Arc<Limiter>,
}

impl AdaptiveHandle {
    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.limiter.name
    }

    /// The current limit, as the algorithm last set it.
    pub fn limit(&self) -> u32 {
        self.limiter.sem.limit()
    }

    /// Permits held.
    pub fn in_flight(&self) -> u32 {
        self.limiter.sem.in_flight()
    }

    /// Requests waiting in the queue.
    pub fn queued(&self) -> u32 {
        self.limiter.sem.waiting()
    }

    /// The state and counters at this instant.
    pub fn snapshot(&self) -> Snapshot {
        self.limiter.snapshot()
    }
}
