//! Assertions on a [`Report`] for test suites.
//!
//! ```
//! use watertight_testkit::{assert_that, Report};
//! # let report = Report::from_records(&[]);
//! # if report.requests > 0 {
//! assert_that(&report)
//!     .success_rate_at_least(0.999)
//!     .p99_at_most(std::time::Duration::from_millis(50))
//!     .attempts_per_request_at_most(1.1);
//! # }
//! ```
//!
//! Each assertion panics with the failed property and the report's summary,
//! so a failing test says what broke and what the run looked like.

use std::time::Duration;

use crate::report::Report;

/// Starts a chain of assertions on `report`.
pub fn assert_that(report: &Report) -> ReportAssert<'_> {
    ReportAssert { report }
}

/// A chain of assertions on a [`Report`]; see [`assert_that`].
#[derive(Debug, Clone, Copy)]
pub struct ReportAssert<'a> {
    report: &'a Report,
}

impl<'a> ReportAssert<'a> {
    #[track_caller]
    fn check(self, ok: bool, what: std::fmt::Arguments<'_>) -> Self {
        assert!(ok, "{what}\n  report: {}", self.report.summary());
        self
    }

    #[track_caller]
    fn latency_at_most(self, what: &str, got_ms: f64, d: Duration) -> Self {
        let max = d.as_secs_f64() * 1000.0;
        self.check(
            got_ms <= max,
            format_args!("expected {what} <= {max} ms, got {got_ms} ms"),
        )
    }

    /// At least `n` requests were sent.
    #[track_caller]
    pub fn requests_at_least(self, n: u64) -> Self {
        self.check(
            self.report.requests >= n,
            format_args!(
                "expected at least {n} requests, got {}",
                self.report.requests
            ),
        )
    }

    /// The success rate is at least `rate` (`0.0..=1.0`).
    #[track_caller]
    pub fn success_rate_at_least(self, rate: f64) -> Self {
        let got = self.report.success_rate;
        self.check(
            got >= rate,
            format_args!("expected success rate >= {rate}, got {got}"),
        )
    }

    /// The p99 latency of all requests is at most `d`.
    #[track_caller]
    pub fn p99_at_most(self, d: Duration) -> Self {
        self.latency_at_most("p99", self.report.latency.p99_ms, d)
    }

    /// The p99.9 latency of all requests is at most `d`.
    #[track_caller]
    pub fn p999_at_most(self, d: Duration) -> Self {
        self.latency_at_most("p99.9", self.report.latency.p999_ms, d)
    }

    /// The p99 latency of the successful requests is at most `d`.
    #[track_caller]
    pub fn success_p99_at_most(self, d: Duration) -> Self {
        self.latency_at_most("p99 of successes", self.report.success_latency.p99_ms, d)
    }

    /// Attempts per request are at most `n` (no retry storm).
    #[track_caller]
    pub fn attempts_per_request_at_most(self, n: f64) -> Self {
        let got = self.report.attempts_per_request;
        self.check(
            got <= n,
            format_args!("expected at most {n} attempts per request, got {got}"),
        )
    }

    /// At least `share` of the successful requests were served in the
    /// client's own zone.
    #[track_caller]
    pub fn local_zone_share_at_least(self, share: f64) -> Self {
        let got = self.report.local_zone_share;
        self.check(
            got >= share,
            format_args!("expected local-zone share >= {share}, got {got}"),
        )
    }

    /// The endpoint `id` answered at most `share` of the requests.
    #[track_caller]
    pub fn endpoint_share_at_most(self, id: &str, share: f64) -> Self {
        let n = self.report.per_endpoint.get(id).copied().unwrap_or(0);
        let got = if self.report.requests == 0 {
            0.0
        } else {
            n as f64 / self.report.requests as f64
        };
        self.check(
            got <= share,
            format_args!("expected endpoint {id} to answer at most {share} of requests, got {got}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::{Outcome, Record};
    use std::sync::Arc;

    fn report(successes: usize, failures: usize) -> Report {
        let rec = |outcome| Record {
            client_zone: Arc::from("a"),
            start: Duration::ZERO,
            latency: Duration::from_millis(10),
            outcome,
            attempts: 1,
            served_by: None,
            served_zone: Some("a".into()),
        };
        let mut v: Vec<Record> = (0..successes).map(|_| rec(Outcome::Success)).collect();
        v.extend((0..failures).map(|_| rec(Outcome::Error)));
        Report::from_records(&v)
    }

    #[test]
    fn passing_assertions_chain() {
        assert_that(&report(999, 1))
            .requests_at_least(1000)
            .success_rate_at_least(0.999)
            .p99_at_most(Duration::from_millis(10))
            .attempts_per_request_at_most(1.0)
            .local_zone_share_at_least(1.0);
    }

    #[test]
    #[should_panic(expected = "expected success rate >= 0.9999, got 0.999")]
    fn failing_assertion_names_the_property() {
        assert_that(&report(999, 1)).success_rate_at_least(0.9999);
    }

    #[test]
    #[should_panic(expected = "expected p99 of successes <= 5 ms, got 10 ms")]
    fn failing_latency_assertion_names_the_percentile_and_both_values() {
        assert_that(&report(10, 0)).success_p99_at_most(Duration::from_millis(5));
    }
}
