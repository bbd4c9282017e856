//! The mark on a result a retry layer gave up on.
//!
//! Retry layers stacked on one another multiply attempts: three layers of
//! three attempts send 27. So a layer that stops retrying a retryable
//! failure marks the result, and every watertight retry layer passes a
//! marked result through without retrying it. Errors are marked by wrapping
//! them in [`error::Exhausted`](crate::error::Exhausted); responses (any type
//! that [carries extensions](watertight_core::Extensions), such as
//! `http::Response`) get a [`RetriesExhausted`] extension.

use std::fmt;

use watertight_core::{find_cause, BoxError, Extensions};

use crate::error::Exhausted;

/// Why a retry layer stopped retrying a retryable failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// `max_attempts` were sent.
    Attempts,
    /// The retry budget refused the retry.
    Budget,
    /// The overall deadline passed, or the time left after the backoff would
    /// be under the floor.
    Deadline,
    /// The server said not to retry (`grpc-retry-pushback-ms` negative).
    DoNotRetry,
    /// The server asked for a delay longer than `max_server_delay`.
    ServerDelay,
    /// The request is not idempotent (the idempotency predicate said no).
    NotIdempotent,
    /// The request could not be copied for another attempt (a body over the
    /// replay limit).
    NotReplayable,
    /// Retries were turned off through the handle.
    Disabled,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 8] = [
        Reason::Attempts,
        Reason::Budget,
        Reason::Deadline,
        Reason::DoNotRetry,
        Reason::ServerDelay,
        Reason::NotIdempotent,
        Reason::NotReplayable,
        Reason::Disabled,
    ];

    /// The reason in snake case, as in the `reason` label of
    /// `watertight_retry_gave_up_total`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Attempts => "attempts",
            Reason::Budget => "budget",
            Reason::Deadline => "deadline",
            Reason::DoNotRetry => "do_not_retry",
            Reason::ServerDelay => "server_delay",
            Reason::NotIdempotent => "not_idempotent",
            Reason::NotReplayable => "not_replayable",
            Reason::Disabled => "disabled",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Attempts => "attempts exhausted",
            Reason::Budget => "retry budget exhausted",
            Reason::Deadline => "deadline",
            Reason::DoNotRetry => "server asked not to retry",
            Reason::ServerDelay => "server delay above the maximum",
            Reason::NotIdempotent => "request not idempotent",
            Reason::NotReplayable => "request not replayable",
            Reason::Disabled => "retries disabled",
        })
    }
}

/// The response extension marking a response a retry layer gave up on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetriesExhausted {
    /// Why the layer stopped.
    pub reason: Reason,
    /// The attempts sent, the first included.
    pub attempts: u32,
}

/// Whether a retry layer already gave up on this result: an
/// [`Exhausted`] error anywhere in the error's source chain, or a response
/// carrying [`RetriesExhausted`].
///
/// ```
/// use watertight_core::{BoxError, Extensions};
/// use watertight_retry::is_exhausted;
///
/// struct Reply;
/// impl Extensions for Reply {}
///
/// let fresh: Result<Reply, BoxError> = Err("connection reset".into());
/// assert!(!is_exhausted(&fresh));
/// ```
pub fn is_exhausted<Res: Extensions>(result: &Result<Res, BoxError>) -> bool {
    match result {
        Ok(res) => res.extension::<RetriesExhausted>().is_some(),
        Err(err) => find_cause::<Exhausted>(&**err).is_some(),
    }
}

/// Marks `result` as given up on: the error is wrapped in [`Exhausted`], the
/// response gets a [`RetriesExhausted`] extension.
pub(crate) fn mark<Res: Extensions>(
    result: Result<Res, BoxError>,
    reason: Reason,
    attempts: u32,
) -> Result<Res, BoxError> {
    match result {
        Ok(mut res) => {
            res.insert_extension(RetriesExhausted { reason, attempts });
            Ok(res)
        }
        Err(err) => Err(Box::new(Exhausted::new(reason, attempts, err))),
    }
}
