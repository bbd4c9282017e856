//! Deadlines: one time budget for a request, across its attempts and
//! across the services it passes through.
//!
//! A [`Deadline`] is a request extension holding the instant by which the
//! caller no longer wants an answer. The [`Retry`](crate::Retry) layer
//! honours one found on a request (and its own `timeout`, whichever is
//! earlier): it starts no attempt with less than `min_remaining` left, takes
//! no backoff that would leave less, and ends the request when the deadline
//! passes. It puts each attempt's own deadline (the earlier of the overall
//! one and the per-attempt timeout) on the attempt's request.
//!
//! Propagation (feature `http`), as gRPC does with `grpc-timeout` and Envoy
//! with `x-envoy-expected-rq-timeout-ms`:
//!
//! - on the server, [`ServerDeadlineLayer`] reads the caller's remaining
//!   time from a header into a [`Deadline`], so the server's own outgoing
//!   calls can be given no more time than the caller will wait;
//! - on the client, [`PropagateDeadlineLayer`] (inside the retry layer)
//!   writes each attempt's remaining time into the header.
//!
//! The `grpc-timeout` format (gRPC over HTTP/2): at most eight ASCII digits
//! followed by a unit, `H` hours, `M` minutes, `S` seconds, `m`
//! milliseconds, `u` microseconds or `n` nanoseconds.

use std::time::Duration;

use tokio::time::Instant;

/// The instant by which a request must be answered, as a request
/// extension. See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline at `instant`.
    pub const fn at(instant: Instant) -> Self {
        Deadline(instant)
    }

    /// A deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Deadline(Instant::now() + timeout)
    }

    /// The instant.
    pub const fn instant(self) -> Instant {
        self.0
    }

    /// The time left (zero once passed).
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether it has passed.
    pub fn is_expired(self) -> bool {
        Instant::now() >= self.0
    }
}

/// The largest `grpc-timeout` value: eight digits.
const GRPC_MAX_VALUE: u64 = 99_999_999;

/// Parses a `grpc-timeout` value (`"100m"`, `"5S"`); `None` when malformed.
///
/// ```
/// use std::time::Duration;
/// use watertight_retry::deadline::parse_grpc_timeout;
///
/// assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
/// assert_eq!(parse_grpc_timeout("123456789n"), None); // nine digits
/// assert_eq!(parse_grpc_timeout("5s"), None); // `s` is not a unit
/// ```
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a duration as a `grpc-timeout` value, in the finest unit whose
/// value fits eight digits, rounded down (the callee never gets more time
/// than the caller has).
///
/// ```
/// use std::time::Duration;
/// use watertight_retry::deadline::format_grpc_timeout;
///
/// assert_eq!(format_grpc_timeout(Duration::from_millis(1500)), "1500000u");
/// assert_eq!(format_grpc_timeout(Duration::from_secs(3600 * 24 * 365)), "31536000S");
/// assert_eq!(format_grpc_timeout(Duration::from_secs(3600 * 24 * 365 * 10)), "5256000M");
/// ```
pub fn format_grpc_timeout(timeout: Duration) -> String {
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in units {
        let v = nanos / per;
        if v <= u128::from(GRPC_MAX_VALUE) {
            return format!("{v}{unit}");
        }
    }
    format!("{GRPC_MAX_VALUE}H")
}

#[cfg(feature = "http")]
pub use self::http_impl::{
    DeadlineHeader, PropagateDeadline, PropagateDeadlineLayer, ServerDeadline, ServerDeadlineLayer,
};

#[cfg(feature = "http")]
mod http_impl {
    use std::task::{Context, Poll};
    use std::time::Duration;

    use http::{HeaderName, HeaderValue, Request};
    use tokio::time::Instant;
    use tower_layer::Layer;
    use tower_service::Service;

    use super::{format_grpc_timeout, parse_grpc_timeout, Deadline};

    /// The header a deadline travels in.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub enum DeadlineHeader {
        /// `grpc-timeout`, in its own format (the default).
        #[default]
        GrpcTimeout,
        /// A header holding whole milliseconds, such as Envoy's
        /// `x-envoy-expected-rq-timeout-ms`.
        Millis(HeaderName),
    }

    static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

    impl DeadlineHeader {
        fn name(&self) -> &HeaderName {
            match self {
                DeadlineHeader::GrpcTimeout => &GRPC_TIMEOUT,
                DeadlineHeader::Millis(name) => name,
            }
        }

        fn parse(&self, value: &HeaderValue) -> Option<Duration> {
            let text = value.to_str().ok()?;
            match self {
                DeadlineHeader::GrpcTimeout => parse_grpc_timeout(text),
                DeadlineHeader::Millis(_) => text.trim().parse().ok().map(Duration::from_millis),
            }
        }

        fn format(&self, remaining: Duration) -> HeaderValue {
            let text = match self {
                DeadlineHeader::GrpcTimeout => format_grpc_timeout(remaining),
                DeadlineHeader::Millis(_) => remaining.as_millis().to_string(),
            };
            HeaderValue::try_from(text).expect("digits and a unit letter are a valid header value")
        }
    }

    /// Reads the caller's remaining time from a header into a [`Deadline`]
    /// request extension (keeping an earlier one already there).
    ///
    /// # Clone
    ///
    /// Configuration only.
    #[derive(Clone, Debug, Default)]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub struct ServerDeadlineLayer {
        header: DeadlineHeader,
        max: Option<Duration>,
    }

    impl ServerDeadlineLayer {
        /// Reads `grpc-timeout`.
        pub fn new() -> Self {
            ServerDeadlineLayer::default()
        }

        /// Reads `header` instead.
        pub fn header(mut self, header: DeadlineHeader) -> Self {
            self.header = header;
            self
        }

        /// Caps what a caller may ask for.
        pub fn max(mut self, max: Duration) -> Self {
            self.max = Some(max);
            self
        }
    }

    impl<S> Layer<S> for ServerDeadlineLayer {
        type Service = ServerDeadline<S>;

        fn layer(&self, inner: S) -> ServerDeadline<S> {
            ServerDeadline {
                inner,
                layer: self.clone(),
            }
        }
    }

    /// The service of [`ServerDeadlineLayer`].
    #[derive(Clone, Debug)]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub struct ServerDeadline<S> {
        inner: S,
        layer: ServerDeadlineLayer,
    }

    impl<S> ServerDeadline<S> {
        inner_service_accessors!();
    }

    impl<S, B> Service<Request<B>> for ServerDeadline<S>
    where
        S: Service<Request<B>>,
    {
        type Response = S::Response;
        type Error = S::Error;
        type Future = S::Future;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, mut req: Request<B>) -> S::Future {
            let header = &self.layer.header;
            let timeout = req
                .headers()
                .get(header.name())
                .and_then(|v| header.parse(v));
            if let Some(mut timeout) = timeout {
                if let Some(max) = self.layer.max {
                    timeout = timeout.min(max);
                }
                let now = Instant::now();
                let at = now
                    .checked_add(timeout)
                    .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365));
                let deadline = match req.extensions().get::<Deadline>() {
                    Some(d) if d.instant() <= at => *d,
                    _ => Deadline::at(at),
                };
                req.extensions_mut().insert(deadline);
            }
            self.inner.call(req)
        }
    }

    /// Writes the remaining time of a request's [`Deadline`] into a header,
    /// so the server knows how long the client will wait. Place it inside
    /// the retry layer, which sets each attempt's deadline.
    ///
    /// # Clone
    ///
    /// Configuration only.
    #[derive(Clone, Debug, Default)]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub struct PropagateDeadlineLayer {
        header: DeadlineHeader,
    }

    impl PropagateDeadlineLayer {
        /// Writes `grpc-timeout`.
        pub fn new() -> Self {
            PropagateDeadlineLayer::default()
        }

        /// Writes `header` instead.
        pub fn header(mut self, header: DeadlineHeader) -> Self {
            self.header = header;
            self
        }
    }

    impl<S> Layer<S> for PropagateDeadlineLayer {
        type Service = PropagateDeadline<S>;

        fn layer(&self, inner: S) -> PropagateDeadline<S> {
            PropagateDeadline {
                inner,
                header: self.header.clone(),
            }
        }
    }

    /// The service of [`PropagateDeadlineLayer`].
    #[derive(Clone, Debug)]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub struct PropagateDeadline<S> {
        inner: S,
        header: DeadlineHeader,
    }

    impl<S> PropagateDeadline<S> {
        inner_service_accessors!();
    }

    impl<S, B> Service<Request<B>> for PropagateDeadline<S>
    where
        S: Service<Request<B>>,
    {
        type Response = S::Response;
        type Error = S::Error;
        type Future = S::Future;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, mut req: Request<B>) -> S::Future {
            if let Some(d) = req.extensions().get::<Deadline>().copied() {
                let value = self.header.format(d.remaining());
                req.headers_mut().insert(self.header.name().clone(), value);
            }
            self.inner.call(req)
        }
    }
}
