//! Server hints on responses, which PeakEWMA turns into a penalty.

use watertight_core::Hint;

/// Reads a server's retry hint from a response (`Retry-After`,
/// `grpc-retry-pushback-ms`, …).
///
/// A failed response whose hint asks to wait counts, for PeakEWMA, as a
/// round trip as long as the wait (up to
/// [`PeakEwma::max_hint_penalty`](crate::PeakEwma::max_hint_penalty)), so
/// the balancer keeps away from the endpoint about that long. Implemented
/// by [`NoHints`], by closures `Fn(&Res) -> Option<Hint>`, and, with
/// feature `http`, by [`HeaderHints`](crate::http::HeaderHints).
pub trait ServerHints<Res> {
    /// The hint of this response, if any.
    fn hint(&self, response: &Res) -> Option<Hint>;
}

/// Reads no hints: failures cost only the fixed penalty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoHints;

impl<Res> ServerHints<Res> for NoHints {
    fn hint(&self, _: &Res) -> Option<Hint> {
        None
    }
}

impl<Res, F> ServerHints<Res> for F
where
    F: Fn(&Res) -> Option<Hint>,
{
    fn hint(&self, response: &Res) -> Option<Hint> {
        self(response)
    }
}
