//! Server hints: what a server says about when (or whether) to retry.
//!
//! | source | form | hint |
//! |---|---|---|
//! | `Retry-After` (RFC 9110 §10.2.3) | delay-seconds or an HTTP-date | [`Hint::RetryAfter`] (a date in the past is zero) |
//! | `grpc-retry-pushback-ms` (gRPC proposal A6) | integer milliseconds | [`Hint::RetryAfter`]; negative or unparseable is [`Hint::DoNotRetry`], as A6 specifies |
//! | `X-RateLimit-Reset` | unix seconds | [`Hint::RetryAfter`] until that instant; values below one billion are read as a delay in seconds, which some APIs send |
//!
//! Retries honour a hint up to their `max_server_delay` and stop on
//! [`Hint::DoNotRetry`]; load balancers use it to penalise an endpoint.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Name of the gRPC pushback header.
pub const GRPC_RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";
/// Name of the rate-limit reset header.
pub const X_RATELIMIT_RESET: &str = "x-ratelimit-reset";

/// What a server asked of the client's retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hint {
    /// Do not send the request again before this delay has passed.
    RetryAfter(Duration),
    /// Do not send the request again.
    DoNotRetry,
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date, measured from
/// `now`. Returns `None` when the value is neither.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use watertight_core::hint::{parse_retry_after, Hint};
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
/// assert_eq!(parse_retry_after("120", now), Some(Hint::RetryAfter(Duration::from_secs(120))));
/// assert_eq!(
///     parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
///     Some(Hint::RetryAfter(Duration::from_secs(30)))
/// );
/// assert_eq!(parse_retry_after("soon", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Hint> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Hint::RetryAfter(Duration::from_secs(secs)));
    }
    let at = parse_http_date(value)?;
    Some(Hint::RetryAfter(
        at.duration_since(now).unwrap_or(Duration::ZERO),
    ))
}

/// Parses a `grpc-retry-pushback-ms` value (gRPC proposal A6): a non-negative
/// integer is a delay in milliseconds; anything else means do not retry.
///
/// ```
/// use std::time::Duration;
/// use watertight_core::hint::{parse_grpc_pushback, Hint};
///
/// assert_eq!(parse_grpc_pushback("250"), Hint::RetryAfter(Duration::from_millis(250)));
/// assert_eq!(parse_grpc_pushback("-1"), Hint::DoNotRetry);
/// assert_eq!(parse_grpc_pushback("x"), Hint::DoNotRetry);
/// ```
pub fn parse_grpc_pushback(value: &str) -> Hint {
    match value.trim().parse::<i64>() {
        Ok(ms) if ms >= 0 => Hint::RetryAfter(Duration::from_millis(ms as u64)),
        _ => Hint::DoNotRetry,
    }
}

/// Values of `X-RateLimit-Reset` below this are delays in seconds, not unix
/// times (one billion seconds is September 2001).
const UNIX_TIME_FLOOR: u64 = 1_000_000_000;

/// Parses an `X-RateLimit-Reset` value: unix seconds (or, below one billion, a
/// delay in seconds), measured from `now`.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use watertight_core::hint::{parse_rate_limit_reset, Hint};
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// assert_eq!(
///     parse_rate_limit_reset("1700000042", now),
///     Some(Hint::RetryAfter(Duration::from_secs(42)))
/// );
/// assert_eq!(parse_rate_limit_reset("7", now), Some(Hint::RetryAfter(Duration::from_secs(7))));
/// ```
pub fn parse_rate_limit_reset(value: &str, now: SystemTime) -> Option<Hint> {
    let secs = value.trim().parse::<u64>().ok()?;
    if secs < UNIX_TIME_FLOOR {
        return Some(Hint::RetryAfter(Duration::from_secs(secs)));
    }
    let at = UNIX_EPOCH.checked_add(Duration::from_secs(secs))?;
    Some(Hint::RetryAfter(
        at.duration_since(now).unwrap_or(Duration::ZERO),
    ))
}

fn parse_http_date(value: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(value).ok()
}

/// Reads the server hint from response headers, measured from the current
/// system time. `grpc-retry-pushback-ms` wins over `Retry-After`, which wins
/// over `X-RateLimit-Reset`.
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub fn from_headers(headers: &http::HeaderMap) -> Option<Hint> {
    from_headers_at(headers, SystemTime::now())
}

/// [`from_headers`], measured from `now`.
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub fn from_headers_at(headers: &http::HeaderMap, now: SystemTime) -> Option<Hint> {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    if let Some(v) = text(GRPC_RETRY_PUSHBACK_MS) {
        return Some(parse_grpc_pushback(v));
    }
    if let Some(hint) =
        text(http::header::RETRY_AFTER.as_str()).and_then(|v| parse_retry_after(v, now))
    {
        return Some(hint);
    }
    text(X_RATELIMIT_RESET).and_then(|v| parse_rate_limit_reset(v, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = at(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after(" 3 ", now),
            Some(Hint::RetryAfter(Duration::from_secs(3)))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Hint::RetryAfter(Duration::from_secs(10)))
        );
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Hint::RetryAfter(Duration::ZERO))
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 25:00:00 GMT", now),
            None
        );
    }

    #[test]
    fn leap_year_dates() {
        let t = parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT").unwrap();
        assert_eq!(t, at(1_709_164_800));
    }

    #[test]
    fn rate_limit_reset_in_the_past_is_zero() {
        assert_eq!(
            parse_rate_limit_reset("1600000000", at(1_700_000_000)),
            Some(Hint::RetryAfter(Duration::ZERO))
        );
        assert_eq!(parse_rate_limit_reset("soon", at(0)), None);
    }

    #[cfg(feature = "http")]
    #[test]
    fn headers_precedence() {
        let mut h = http::HeaderMap::new();
        assert_eq!(from_headers_at(&h, at(0)), None);
        h.insert(X_RATELIMIT_RESET, "9".parse().unwrap());
        assert_eq!(
            from_headers_at(&h, at(0)),
            Some(Hint::RetryAfter(Duration::from_secs(9)))
        );
        h.insert(http::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(
            from_headers_at(&h, at(0)),
            Some(Hint::RetryAfter(Duration::from_secs(2)))
        );
        h.insert(GRPC_RETRY_PUSHBACK_MS, "-1".parse().unwrap());
        assert_eq!(from_headers_at(&h, at(0)), Some(Hint::DoNotRetry));
    }
}
