//! HTTP responses for rejections (feature `http`).
//!
//! A server that sheds load answers `503 Service Unavailable` with a
//! `Retry-After` header, so well-behaved clients back off instead of
//! retrying at once. [`ErrorResponse`] maps the errors of this crate's layers
//! that way — [`Full`] and [`Throttled`], found anywhere in the error's
//! `source()` chain — and any other error to a plain `500 Internal Server
//! Error` (without its message: internal errors are not for clients).
//!
//! With feature `axum` it implements `IntoResponse`, so it is the whole
//! error handler of an axum server behind an adaptive limit:
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use axum::{error_handling::HandleErrorLayer, routing::get, Router};
//! use tower::ServiceBuilder;
//! use watertight_bulkhead::{http::ErrorResponse, AdaptiveConcurrencyLayer};
//! use watertight_core::BoxError;
//!
//! let app: Router = Router::new().route("/", get(|| async { "ok" })).layer(
//!     ServiceBuilder::new()
//!         .layer(HandleErrorLayer::new(|err: BoxError| async move { ErrorResponse::from(err) }))
//!         .layer(AdaptiveConcurrencyLayer::default()),
//! );
//! # }
//! ```

use std::error::Error;
use std::time::Duration;

use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::StatusCode;
use watertight_core::{find_cause, BoxError};

use crate::error::{Full, Throttled};

/// The HTTP response for an error; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorResponse {
    status: StatusCode,
    retry_after: Option<Duration>,
    message: String,
}

impl ErrorResponse {
    /// `503` with `Retry-After` for a rejection of this crate's layers,
    /// `None` for any other error.
    pub fn rejection(err: &(dyn Error + 'static)) -> Option<Self> {
        let (retry_after, message) = if let Some(full) = find_cause::<Full>(err) {
            (full.retry_after(), full.to_string())
        } else if let Some(t) = find_cause::<Throttled>(err) {
            (t.retry_after(), t.to_string())
        } else {
            return None;
        };
        Some(ErrorResponse {
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: Some(retry_after),
            message,
        })
    }

    /// [`rejection`](Self::rejection), or `500 Internal Server Error` for
    /// any other error.
    pub fn from_error(err: &(dyn Error + 'static)) -> Self {
        ErrorResponse::rejection(err).unwrap_or_else(|| ErrorResponse {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            retry_after: None,
            message: "internal server error".to_owned(),
        })
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `Retry-After` hint, for rejections.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The body text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `Retry-After` header value: whole seconds, rounded up, at least 1
    /// (RFC 9110 allows only delta-seconds or a date).
    pub fn retry_after_header(&self) -> Option<HeaderValue> {
        self.retry_after.map(|d| {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            HeaderValue::from(secs.max(1))
        })
    }

    /// The response, with a `text/plain` body of any type that converts from
    /// a `String`.
    pub fn into_http<B: From<String>>(self) -> http::Response<B> {
        let retry_after = self.retry_after_header();
        let mut res = http::Response::new(B::from(self.message));
        *res.status_mut() = self.status;
        let headers = res.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(v) = retry_after {
            headers.insert(RETRY_AFTER, v);
        }
        res
    }
}

impl From<BoxError> for ErrorResponse {
    fn from(err: BoxError) -> Self {
        ErrorResponse::from_error(&*err)
    }
}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl axum::response::IntoResponse for ErrorResponse {
    fn into_response(self) -> axum::response::Response {
        self.into_http::<String>().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Reason;

    #[test]
    fn rejections_become_503_with_retry_after_rounded_up() {
        let full = Full::new(
            Reason::AtLimit,
            10,
            Duration::ZERO,
            Duration::from_millis(1500),
        );
        let res = ErrorResponse::from(BoxError::from(full)).into_http::<String>();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[RETRY_AFTER], "2");
        assert_eq!(res.body(), "bulkhead is full (10 in flight)");

        let throttled = Throttled::new(0.5, Duration::ZERO);
        let res = ErrorResponse::from_error(&throttled);
        assert_eq!(
            res.retry_after_header().unwrap(),
            "1",
            "at least one second"
        );
    }

    #[test]
    fn other_errors_become_500_without_their_message() {
        let err: BoxError = "database password is hunter2".into();
        let res = ErrorResponse::from(err);
        assert!(ErrorResponse::rejection(&*BoxError::from("x")).is_none());
        let res = res.into_http::<String>();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(res.headers().get(RETRY_AFTER).is_none());
        assert_eq!(res.body(), "internal server error");
    }
}
