//! Typed events, for tests and custom sinks.
//!
//! Register a listener with [`Builder::on_event`](crate::Builder::on_event)
//! or [`HedgeBuilder::on_event`](crate::hedge::HedgeBuilder::on_event). It
//! runs on the task that caused the event, with no lock held: keep it short.

use std::sync::Arc;
use std::time::Duration;

use crate::budget::Cause;
use crate::mark::Reason;

/// Something a retry or hedging layer did.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A retry was granted and will be sent after `delay`.
    Retry(Retry),
    /// The layer stopped retrying a retryable failure.
    GaveUp(GaveUp),
    /// A hedge (backup copy of a request still in flight) was sent.
    HedgeSent(Hedge),
    /// A hedge's response won over the original's.
    HedgeWon(Hedge),
    /// The budget refused a hedge.
    HedgeRefused(Hedge),
}

/// A granted retry.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Retry {
    /// The layer's name.
    pub name: Arc<str>,
    /// The attempt about to be sent (2 for the first retry).
    pub attempt: u32,
    /// The wait before it: the backoff, or the server's delay when longer.
    pub delay: Duration,
    /// What failed: an attempt ([`Cause::Retry`]) or its timeout
    /// ([`Cause::Timeout`]).
    pub cause: Cause,
    /// The delay the server asked for, if it did.
    pub server_delay: Option<Duration>,
}

/// A request the layer stopped retrying.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct GaveUp {
    /// The layer's name.
    pub name: Arc<str>,
    /// Why.
    pub reason: Reason,
    /// The attempts sent, the first included.
    pub attempts: u32,
}

/// A hedge sent, won or refused.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Hedge {
    /// The layer's name.
    pub name: Arc<str>,
    /// The attempt: 2 for the first hedge.
    pub attempt: u32,
}

/// The listener type the layers store.
pub(crate) type Listener = Arc<dyn Fn(&Event) + Send + Sync>;
