//! Observing and controlling a retry layer at run time.

use std::fmt;
use std::sync::Arc;

use crate::mark::Reason;

pub(crate) trait Observe: Send + Sync {
    fn name(&self) -> &str;
    fn snapshot(&self) -> Snapshot;
    fn set_enabled(&self, enabled: bool) -> bool;
}

/// Observes and controls one retry layer (every service it wraps).
///
/// [`disable`](Self::disable) is the incident switch: every request is then
/// sent once, and a retryable failure ends it at once (marked
/// [`Reason::Disabled`]).
///
/// # Clone
///
/// Cheap: clones share the layer's state (an `Arc`).
#[derive(Clone)]
pub struct RetryHandle {
    pub(crate) inner: Arc<dyn Observe>,
}

impl RetryHandle {
    /// The layer's name.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// The layer's counters at this instant.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.snapshot()
    }

    /// Stops all retries until [`enable`](Self::enable). Returns whether
    /// this changed anything.
    pub fn disable(&self) -> bool {
        self.inner.set_enabled(false)
    }

    /// Allows retries again. Returns whether this changed anything.
    pub fn enable(&self) -> bool {
        self.inner.set_enabled(true)
    }
}

impl fmt::Debug for RetryHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryHandle")
            .field("name", &self.name())
            .finish()
    }
}

/// A retry layer's counters, since it was built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Requests that entered the layer.
    pub requests: u64,
    /// Retries sent.
    pub retries: u64,
    /// Attempts sent: requests plus retries.
    pub attempts: u64,
    /// Retries the budget refused.
    pub budget_exhausted: u64,
    /// Retryable failures the layer gave up on, by reason.
    pub gave_up: [(Reason, u64); Reason::ALL.len()],
    /// What the budget would grant now.
    pub budget_remaining: u64,
    /// Whether retries are on.
    pub enabled: bool,
}

impl Snapshot {
    /// Retryable failures given up on for `reason`.
    pub fn gave_up(&self, reason: Reason) -> u64 {
        self.gave_up[reason.index()].1
    }
}
