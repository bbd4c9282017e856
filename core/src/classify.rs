//! Response classification, shared by every layer that counts outcomes.
//!
//! A user classifies once and the circuit breaker, retries, outlier detection,
//! adaptive concurrency limits and chaos safeguards all read the same verdict:
//!
//! - [`ResponseClass::Success`]: the backend is healthy;
//! - [`ResponseClass::Failure`]: the backend failed; `retryable` says whether
//!   sending the request again could help;
//! - [`ResponseClass::Ignored`]: the result says nothing about the backend (a
//!   client cancellation, a caller error the user chooses to ignore) and
//!   counts nowhere.
//!
//! The shape follows tower-http's `classify` module: a trait with well-named
//! ready-made implementations instead of boolean flags.

/// The verdict on one result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResponseClass {
    /// The backend served the request.
    Success,
    /// The backend failed to serve the request.
    Failure {
        /// Whether sending the request again could succeed.
        retryable: bool,
    },
    /// The result says nothing about the backend; it is counted nowhere.
    Ignored,
}

impl ResponseClass {
    /// A retryable failure.
    pub const RETRYABLE: ResponseClass = ResponseClass::Failure { retryable: true };
    /// A failure that retrying will not fix.
    pub const FATAL: ResponseClass = ResponseClass::Failure { retryable: false };

    /// Returns `true` for [`ResponseClass::Success`].
    pub const fn is_success(self) -> bool {
        matches!(self, ResponseClass::Success)
    }

    /// Returns `true` for any [`ResponseClass::Failure`].
    pub const fn is_failure(self) -> bool {
        matches!(self, ResponseClass::Failure { .. })
    }

    /// Returns `true` for a retryable [`ResponseClass::Failure`].
    pub const fn is_retryable(self) -> bool {
        matches!(self, ResponseClass::Failure { retryable: true })
    }
}

/// Decides the [`ResponseClass`] of a service's result.
///
/// Implemented by [`ErrorsAsFailures`], by `ServerErrorsAsFailures` (feature
/// `http`) and, through [`ClassifyFn`], by any
/// `Fn(&Result<Res, E>) -> ResponseClass`.
pub trait Classify<Res, E> {
    /// Classifies one result.
    fn classify(&self, result: &Result<Res, E>) -> ResponseClass;
}

impl<Res, E, C: Classify<Res, E> + ?Sized> Classify<Res, E> for &C {
    fn classify(&self, result: &Result<Res, E>) -> ResponseClass {
        (**self).classify(result)
    }
}

impl<Res, E, C: Classify<Res, E> + ?Sized> Classify<Res, E> for std::sync::Arc<C> {
    fn classify(&self, result: &Result<Res, E>) -> ResponseClass {
        (**self).classify(result)
    }
}

/// Every `Ok` is a success and every `Err` a retryable failure.
///
/// The default classifier of every layer: right for any service whose errors
/// mean the backend failed (connection refused, timeouts, protocol errors).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorsAsFailures;

impl<Res, E> Classify<Res, E> for ErrorsAsFailures {
    fn classify(&self, result: &Result<Res, E>) -> ResponseClass {
        match result {
            Ok(_) => ResponseClass::Success,
            Err(_) => ResponseClass::RETRYABLE,
        }
    }
}

/// A closure used as a [`Classify`]; built with [`classify_fn`].
#[derive(Clone, Copy)]
pub struct ClassifyFn<F>(F);

impl<F> std::fmt::Debug for ClassifyFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifyFn").finish_non_exhaustive()
    }
}

/// Uses a closure as a [`Classify`].
///
/// ```
/// use watertight_core::classify::{classify_fn, Classify, ResponseClass};
///
/// // A status code in `Ok`, where 429 means "slow down" and 5xx is a failure.
/// let c = classify_fn(|r: &Result<u16, ()>| match r {
///     Ok(429) => ResponseClass::RETRYABLE,
///     Ok(s) if *s >= 500 => ResponseClass::FATAL,
///     Ok(_) => ResponseClass::Success,
///     Err(()) => ResponseClass::Ignored,
/// });
/// assert_eq!(c.classify(&Ok(429)), ResponseClass::RETRYABLE);
/// assert_eq!(c.classify(&Err(())), ResponseClass::Ignored);
/// ```
pub const fn classify_fn<F>(f: F) -> ClassifyFn<F> {
    ClassifyFn(f)
}

impl<F, Res, E> Classify<Res, E> for ClassifyFn<F>
where
    F: Fn(&Result<Res, E>) -> ResponseClass,
{
    fn classify(&self, result: &Result<Res, E>) -> ResponseClass {
        (self.0)(result)
    }
}

#[cfg(feature = "http")]
pub use self::http_impl::ServerErrorsAsFailures;

#[cfg(feature = "http")]
mod http_impl {
    use super::{Classify, ResponseClass};
    use http::StatusCode;

    /// Classifies `http::Response`s by status, the way a load balancer judges
    /// a backend's health.
    ///
    /// | result | class |
    /// |---|---|
    /// | `Err(_)` (connection, protocol errors) | retryable failure |
    /// | 502, 503, 504 | retryable failure |
    /// | other 5xx | failure, not retryable |
    /// | 429 Too Many Requests, 408 Request Timeout | retryable failure |
    /// | other 4xx | success: the server is healthy, the request was wrong |
    /// | 1xx, 2xx, 3xx | success |
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ServerErrorsAsFailures;

    impl ServerErrorsAsFailures {
        /// The class of a status code alone.
        pub fn classify_status(status: StatusCode) -> ResponseClass {
            match status.as_u16() {
                502..=504 | 408 | 429 => ResponseClass::RETRYABLE,
                500..=599 => ResponseClass::FATAL,
                _ => ResponseClass::Success,
            }
        }
    }

    impl<B, E> Classify<http::Response<B>, E> for ServerErrorsAsFailures {
        fn classify(&self, result: &Result<http::Response<B>, E>) -> ResponseClass {
            match result {
                Ok(res) => Self::classify_status(res.status()),
                Err(_) => ResponseClass::RETRYABLE,
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn class(code: u16) -> ResponseClass {
            let res = http::Response::builder().status(code).body(()).unwrap();
            ServerErrorsAsFailures.classify(&Ok::<_, ()>(res))
        }

        #[test]
        fn server_errors_as_failures_table() {
            assert_eq!(class(200), ResponseClass::Success);
            assert_eq!(class(304), ResponseClass::Success);
            assert_eq!(class(404), ResponseClass::Success);
            assert_eq!(class(400), ResponseClass::Success);
            assert_eq!(class(408), ResponseClass::RETRYABLE);
            assert_eq!(class(429), ResponseClass::RETRYABLE);
            assert_eq!(class(500), ResponseClass::FATAL);
            assert_eq!(class(501), ResponseClass::FATAL);
            assert_eq!(class(502), ResponseClass::RETRYABLE);
            assert_eq!(class(503), ResponseClass::RETRYABLE);
            assert_eq!(class(504), ResponseClass::RETRYABLE);
            let err: Result<http::Response<()>, &str> = Err("reset");
            assert_eq!(
                ServerErrorsAsFailures.classify(&err),
                ResponseClass::RETRYABLE
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_as_failures() {
        assert_eq!(
            ErrorsAsFailures.classify(&Ok::<_, ()>(())),
            ResponseClass::Success
        );
        assert!(ErrorsAsFailures.classify(&Err::<(), _>(())).is_retryable());
    }

    #[test]
    fn classify_through_references_and_arcs() {
        let c = std::sync::Arc::new(classify_fn(|_: &Result<(), ()>| ResponseClass::Ignored));
        assert_eq!(c.classify(&Ok(())), ResponseClass::Ignored);
        fn through_ref<C: Classify<(), ()>>(c: C) -> ResponseClass {
            c.classify(&Ok(()))
        }
        assert_eq!(through_ref(&c), ResponseClass::Ignored);
    }
}
