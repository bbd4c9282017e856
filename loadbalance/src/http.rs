//! Helpers for `http` requests and responses (feature `http`).
//!
//! ```
//! use http::header::HeaderName;
//! use watertight_loadbalance::http::{hash_header, subset_header};
//!
//! let canary = subset_header::<()>(HeaderName::from_static("x-version"));
//! let req = http::Request::builder().header("x-version", "v2").body(()).unwrap();
//! assert_eq!(canary(&req), Some("v2"));
//!
//! let sticky = hash_header::<()>(HeaderName::from_static("x-user"));
//! let req = http::Request::builder().header("x-user", "42").body(()).unwrap();
//! assert_eq!(sticky(&req), Some(watertight_loadbalance::hash_key(b"42")));
//! ```

use http::header::HeaderName;
use watertight_core::Hint;

use crate::hash::hash_key;
use crate::hints::ServerHints;

/// Reads `grpc-retry-pushback-ms`, `Retry-After` and `X-RateLimit-Reset`
/// from response headers (see `watertight_core::hint::from_headers`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderHints;

impl<B> ServerHints<http::Response<B>> for HeaderHints {
    fn hint(&self, response: &http::Response<B>) -> Option<Hint> {
        watertight_core::hint::from_headers(response.headers())
    }
}

/// A subset override for
/// [`Balancer::with_subset_override`](crate::Balancer::with_subset_override):
/// the value of header `name` (a request with `x-version: v2` goes to the
/// `v2` subset).
pub fn subset_header<B>(
    name: HeaderName,
) -> impl for<'a> Fn(&'a http::Request<B>) -> Option<&'a str> + Clone + Send + Sync + 'static {
    move |req: &http::Request<B>| req.headers().get(&name).and_then(|v| v.to_str().ok())
}

/// A hash key for [`Balancer::with_hash_key`](crate::Balancer::with_hash_key):
/// the [`hash_key`] of header `name`'s bytes; requests without it are
/// balanced by P2C.
pub fn hash_header<B>(
    name: HeaderName,
) -> impl Fn(&http::Request<B>) -> Option<u64> + Clone + Send + Sync + 'static {
    move |req: &http::Request<B>| req.headers().get(&name).map(|v| hash_key(v.as_bytes()))
}
