//! Typed events, for tests and custom sinks.
//!
//! Register a listener with the `on_event` method of a layer's builder. It
//! runs on the thread that caused the event, after every internal lock is
//! released: keep it short.

use std::sync::Arc;

use crate::error::Reason;

/// Something a limiter did.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A request was turned away.
    Rejected(Rejected),
    /// The concurrency limit changed.
    LimitChanged(LimitChanged),
    /// Client-side throttling rejected a request locally.
    Throttled(Throttled),
}

/// A request a limiter turned away.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejected {
    /// The limiter's name.
    pub name: Arc<str>,
    /// The partition, for a [`PartitionedBulkhead`](crate::PartitionedBulkhead).
    pub partition: Option<Arc<str>>,
    /// Why.
    pub reason: Reason,
    /// The limit at that moment.
    pub limit: u32,
}

/// A change of a concurrency limit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitChanged {
    /// The limiter's name.
    pub name: Arc<str>,
    /// The limit before.
    pub from: u32,
    /// The limit after.
    pub to: u32,
    /// Who changed it.
    pub cause: Cause,
}

/// Who changed a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// A handle's `resize`.
    Resized,
    /// The limit algorithm of an
    /// [`AdaptiveConcurrency`](crate::AdaptiveConcurrency).
    Adapted,
}

impl Cause {
    /// `resized` or `adapted`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Cause::Resized => "resized",
            Cause::Adapted => "adapted",
        }
    }
}

/// A request rejected locally by client-side throttling.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Throttled {
    /// The limiter's name.
    pub name: Arc<str>,
    /// The rejection probability at that moment.
    pub probability: f64,
}

/// The listener type the limiters store.
pub(crate) type Listener = Arc<dyn Fn(&Event) + Send + Sync>;
