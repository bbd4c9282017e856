//! What may be retried: classification, idempotency, server hints and how
//! requests are copied.
//!
//! A [`Policy`] answers the four questions a retry or hedging layer asks. The
//! ready-made [`StandardPolicy`] answers each with a separate piece, so a user
//! replaces only the piece that differs:
//!
//! | question | piece | default |
//! |---|---|---|
//! | did the attempt fail, and could another attempt help? | a [`Classify`] | [`ErrorsAsFailures`] (use `ServerErrorsAsFailures` for HTTP) |
//! | is the request safe to send twice? | an [`Idempotency`] | [`SafeRequests`]: HTTP GET, HEAD, OPTIONS, PUT, DELETE, or any request marked [`RetrySafe`] |
//! | did the server say when, or whether, to retry? | a [`Hints`] | [`HeaderHints`]: `grpc-retry-pushback-ms`, `Retry-After`, `X-RateLimit-Reset` |
//! | how is the request copied for another attempt? | a [`CloneRequest`] | [`ByClone`]: `Clone`, or [`ReplayBody`](crate::replay::ReplayBody) for HTTP bodies |
//!
//! [`SafeRequests`] and [`HeaderHints`] know `http` messages (feature
//! `http`). For other request types choose [`AllRequests`], [`MarkedSafe`] or
//! [`idempotent_fn`], and [`NoHints`] or [`hints_fn`]; or implement
//! `Idempotency<YourRequest> for SafeRequests` in your crate.
//!
//! The idempotency rule is RFC 9110's (§9.2.2) idempotent methods less
//! TRACE; Envoy and gRPC likewise retry only what the user declares safe.

use std::fmt;

use watertight_core::{BoxError, Classify, ErrorsAsFailures, Extensions, Hint, ResponseClass};

/// The four questions a retry layer asks. See the [module docs](self).
///
/// A policy is shared by every clone of the layer's services (in an `Arc`),
/// so it must be `Send + Sync`.
pub trait Policy<Req, Res>: Send + Sync + 'static {
    /// The class of an attempt's result. Errors arrive boxed.
    fn classify(&self, result: &Result<Res, BoxError>) -> ResponseClass;

    /// What the server said about retrying, if anything.
    fn hint(&self, result: &Result<Res, BoxError>) -> Option<Hint>;

    /// Whether the request may be sent more than once.
    fn is_idempotent(&self, req: &Req) -> bool;

    /// A copy of the request for another attempt, or `None` when it cannot
    /// be copied (then it is sent once).
    fn clone_request(&self, req: &Req) -> Option<Req>;
}

/// A [`Policy`] made of four pieces. See the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct StandardPolicy<C = ErrorsAsFailures, I = SafeRequests, H = HeaderHints, R = ByClone> {
    classify: C,
    idempotency: I,
    hints: H,
    clone: R,
}

impl StandardPolicy {
    /// The default pieces.
    pub const fn new() -> Self {
        StandardPolicy {
            classify: ErrorsAsFailures,
            idempotency: SafeRequests,
            hints: HeaderHints,
            clone: ByClone,
        }
    }
}

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl
    StandardPolicy<
        watertight_core::classify::ServerErrorsAsFailures,
        SafeRequests,
        HeaderHints,
        crate::replay::ByReplay,
    >
{
    /// The HTTP preset: 502, 503, 504, 408, 429 and connection errors are
    /// retryable ([`ServerErrorsAsFailures`]); GET, HEAD, OPTIONS, PUT,
    /// DELETE and requests marked [`RetrySafe`] are idempotent; server hints
    /// come from the headers; bodies are [replayed](crate::replay).
    ///
    /// [`ServerErrorsAsFailures`]: watertight_core::classify::ServerErrorsAsFailures
    pub const fn http() -> Self {
        StandardPolicy {
            classify: watertight_core::classify::ServerErrorsAsFailures,
            idempotency: SafeRequests,
            hints: HeaderHints,
            clone: crate::replay::ByReplay,
        }
    }
}

impl<C, I, H, R> StandardPolicy<C, I, H, R> {
    /// Replaces the classifier.
    pub fn classify<C2>(self, classify: C2) -> StandardPolicy<C2, I, H, R> {
        StandardPolicy {
            classify,
            idempotency: self.idempotency,
            hints: self.hints,
            clone: self.clone,
        }
    }

    /// Replaces the idempotency predicate.
    pub fn idempotency<I2>(self, idempotency: I2) -> StandardPolicy<C, I2, H, R> {
        StandardPolicy {
            classify: self.classify,
            idempotency,
            hints: self.hints,
            clone: self.clone,
        }
    }

    /// Replaces how server hints are read.
    pub fn hints<H2>(self, hints: H2) -> StandardPolicy<C, I, H2, R> {
        StandardPolicy {
            classify: self.classify,
            idempotency: self.idempotency,
            hints,
            clone: self.clone,
        }
    }

    /// Replaces how requests are copied.
    pub fn clone_request<R2>(self, clone: R2) -> StandardPolicy<C, I, H, R2> {
        StandardPolicy {
            classify: self.classify,
            idempotency: self.idempotency,
            hints: self.hints,
            clone,
        }
    }
}

impl<Req, Res, C, I, H, R> Policy<Req, Res> for StandardPolicy<C, I, H, R>
where
    C: Classify<Res, BoxError> + Send + Sync + 'static,
    I: Idempotency<Req> + Send + Sync + 'static,
    H: Hints<Res> + Send + Sync + 'static,
    R: CloneRequest<Req> + Send + Sync + 'static,
{
    #[inline]
    fn classify(&self, result: &Result<Res, BoxError>) -> ResponseClass {
        self.classify.classify(result)
    }

    #[inline]
    fn hint(&self, result: &Result<Res, BoxError>) -> Option<Hint> {
        self.hints.hint(result)
    }

    #[inline]
    fn is_idempotent(&self, req: &Req) -> bool {
        self.idempotency.is_idempotent(req)
    }

    #[inline]
    fn clone_request(&self, req: &Req) -> Option<Req> {
        self.clone.clone_request(req)
    }
}

/// Decides whether a request may be sent more than once.
pub trait Idempotency<Req> {
    /// Whether `req` may be sent more than once.
    fn is_idempotent(&self, req: &Req) -> bool;
}

/// The request extension that marks a request safe to send more than once
/// (a POST the server deduplicates, say).
///
/// ```
/// # #[cfg(feature = "http")] {
/// use watertight_retry::policy::{Idempotency, RetrySafe, SafeRequests};
///
/// let mut post = http::Request::post("/orders").body(()).unwrap();
/// assert!(!SafeRequests.is_idempotent(&post));
/// post.extensions_mut().insert(RetrySafe);
/// assert!(SafeRequests.is_idempotent(&post));
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RetrySafe;

/// The default idempotency rule: HTTP GET, HEAD, OPTIONS, PUT and DELETE,
/// and any request carrying [`RetrySafe`]. Implemented for
/// `http::Request` (feature `http`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SafeRequests;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl<B> Idempotency<http::Request<B>> for SafeRequests {
    #[inline]
    fn is_idempotent(&self, req: &http::Request<B>) -> bool {
        use http::Method;
        matches!(
            *req.method(),
            Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
        ) || req.extensions().get::<RetrySafe>().is_some()
    }
}

/// Only requests carrying [`RetrySafe`] are idempotent; works for any
/// request type that [carries extensions](Extensions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MarkedSafe;

impl<Req: Extensions> Idempotency<Req> for MarkedSafe {
    #[inline]
    fn is_idempotent(&self, req: &Req) -> bool {
        req.extension::<RetrySafe>().is_some()
    }
}

/// Every request is idempotent: for services whose every operation is
/// (reads, upserts keyed by the caller).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllRequests;

impl<Req> Idempotency<Req> for AllRequests {
    #[inline]
    fn is_idempotent(&self, _: &Req) -> bool {
        true
    }
}

/// A closure used as an [`Idempotency`]; built with [`idempotent_fn`].
#[derive(Clone, Copy)]
pub struct IdempotentFn<F>(F);

impl<F> fmt::Debug for IdempotentFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotentFn").finish_non_exhaustive()
    }
}

/// Uses a closure as an [`Idempotency`].
pub const fn idempotent_fn<F>(f: F) -> IdempotentFn<F> {
    IdempotentFn(f)
}

impl<Req, F: Fn(&Req) -> bool> Idempotency<Req> for IdempotentFn<F> {
    #[inline]
    fn is_idempotent(&self, req: &Req) -> bool {
        (self.0)(req)
    }
}

/// Reads what a server said about retrying from a result.
pub trait Hints<Res> {
    /// The server's hint, if any.
    fn hint(&self, result: &Result<Res, BoxError>) -> Option<Hint>;
}

/// Server hints from response headers (`grpc-retry-pushback-ms`, then
/// `Retry-After`, then `X-RateLimit-Reset`; see
/// [`watertight_core::hint`]). Implemented for `http::Response` (feature
/// `http`); errors carry no hint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderHints;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl<B> Hints<http::Response<B>> for HeaderHints {
    fn hint(&self, result: &Result<http::Response<B>, BoxError>) -> Option<Hint> {
        match result {
            Ok(res) => watertight_core::hint::from_headers(res.headers()),
            Err(_) => None,
        }
    }
}

/// No server hints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoHints;

impl<Res> Hints<Res> for NoHints {
    #[inline]
    fn hint(&self, _: &Result<Res, BoxError>) -> Option<Hint> {
        None
    }
}

/// A closure used as [`Hints`]; built with [`hints_fn`].
#[derive(Clone, Copy)]
pub struct HintsFn<F>(F);

impl<F> fmt::Debug for HintsFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HintsFn").finish_non_exhaustive()
    }
}

/// Uses a closure as [`Hints`].
pub const fn hints_fn<F>(f: F) -> HintsFn<F> {
    HintsFn(f)
}

impl<Res, F: Fn(&Result<Res, BoxError>) -> Option<Hint>> Hints<Res> for HintsFn<F> {
    #[inline]
    fn hint(&self, result: &Result<Res, BoxError>) -> Option<Hint> {
        (self.0)(result)
    }
}

/// Copies a request for another attempt.
pub trait CloneRequest<Req> {
    /// A copy of `req`, or `None` when it cannot be copied.
    fn clone_request(&self, req: &Req) -> Option<Req>;
}

/// Copies requests with `Clone`. For `http::Request<ReplayBody<B>>`, whose
/// body is not `Clone`, use [`ByReplay`](crate::replay::ByReplay) (feature
/// `http`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByClone;

impl<Req: Clone> CloneRequest<Req> for ByClone {
    #[inline]
    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// A closure used as a [`CloneRequest`]; built with [`clone_fn`].
#[derive(Clone, Copy)]
pub struct CloneFn<F>(F);

impl<F> fmt::Debug for CloneFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloneFn").finish_non_exhaustive()
    }
}

/// Uses a closure as a [`CloneRequest`], for requests that are not `Clone`.
pub const fn clone_fn<F>(f: F) -> CloneFn<F> {
    CloneFn(f)
}

impl<Req, F: Fn(&Req) -> Option<Req>> CloneRequest<Req> for CloneFn<F> {
    #[inline]
    fn clone_request(&self, req: &Req) -> Option<Req> {
        (self.0)(req)
    }
}
