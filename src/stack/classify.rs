//! How the stack's layers judge an outcome.

use watertight_bulkhead::error::{Full, Throttled};
use watertight_core::classify::ServerErrorsAsFailures;
use watertight_core::{is_caused_by, BoxError, Classify, ResponseClass};

/// Whether `e` is a refusal of the stack's own (a concurrency limit's
/// [`Full`], admission's [`Throttled`]): it says nothing about the
/// backends.
fn is_local(e: &BoxError) -> bool {
    is_caused_by::<Full>(&**e) || is_caused_by::<Throttled>(&**e)
}

/// How [admission](crate::bulkhead::Admission) judges a request in the
/// [stack](super): [`ServerErrorsAsFailures`] (a `503`, `429` or `504`, or
/// an error, is the backends refusing the request), except that a request
/// the stack refused itself is [`Ignored`](ResponseClass::Ignored), so it
/// never counts as the backends' refusal.
///
/// ```
/// use http::Response;
/// use watertight::bulkhead::error::Full;
/// use watertight::core::{BoxError, Classify, ResponseClass};
/// use watertight::stack::RefusalClassify;
///
/// let unavailable: Result<Response<()>, BoxError> =
///     Ok(Response::builder().status(503).body(()).unwrap());
/// assert_eq!(RefusalClassify.classify(&unavailable), ResponseClass::RETRYABLE);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefusalClassify;

impl<B> Classify<http::Response<B>, BoxError> for RefusalClassify {
    fn classify(&self, result: &Result<http::Response<B>, BoxError>) -> ResponseClass {
        match result {
            Err(e) if is_local(e) => ResponseClass::Ignored,
            r => ServerErrorsAsFailures.classify(r),
        }
    }
}

/// How the [stack](super)'s concurrency limits judge a call: a response is
/// a round-trip sample when it is a success, and no sample otherwise; an
/// error (a timeout, a lost connection) is a drop; the stack's own refusals
/// are [`Ignored`](ResponseClass::Ignored).
///
/// A concurrency limit follows queueing: the latency of what the backends
/// serve, and timeouts. A refusal answered at once (a `503`) says the
/// backend is shedding, which admission acts on; counted as a drop too, a
/// brownout whose errors have nothing to do with load would drive the
/// limit to its floor and refuse the requests the backends would have
/// served.
///
/// ```
/// use http::Response;
/// use watertight::core::{BoxError, Classify, ResponseClass};
/// use watertight::stack::LimitClassify;
///
/// let unavailable: Result<Response<()>, BoxError> =
///     Ok(Response::builder().status(503).body(()).unwrap());
/// assert_eq!(LimitClassify.classify(&unavailable), ResponseClass::Ignored);
/// let timed_out: Result<Response<()>, BoxError> = Err("timed out".into());
/// assert_eq!(LimitClassify.classify(&timed_out), ResponseClass::RETRYABLE);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitClassify;

impl<B> Classify<http::Response<B>, BoxError> for LimitClassify {
    fn classify(&self, result: &Result<http::Response<B>, BoxError>) -> ResponseClass {
        match result {
            Err(e) if is_local(e) => ResponseClass::Ignored,
            Err(_) => ResponseClass::RETRYABLE,
            Ok(res) => match ServerErrorsAsFailures::classify_status(res.status()) {
                ResponseClass::Success => ResponseClass::Success,
                _ => ResponseClass::Ignored,
            },
        }
    }
}
