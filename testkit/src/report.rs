//! [`Report`]: what a run of load looked like.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::loadgen::{Outcome, Record};

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// The slowest.
    pub max_ms: f64,
}

impl Percentiles {
    fn of(latencies: impl Iterator<Item = Duration>) -> Self {
        // Microseconds, three significant figures, up to an hour.
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds");
        for l in latencies {
            h.saturating_record(l.as_micros().clamp(1, u128::from(u64::MAX)) as u64);
        }
        if h.is_empty() {
            return Percentiles::default();
        }
        // The lowest value of the bucket, so recorded values read back exactly.
        let ms = |q: f64| round3(h.lowest_equivalent(h.value_at_quantile(q)) as f64 / 1000.0);
        Percentiles {
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: round3(h.lowest_equivalent(h.max()) as f64 / 1000.0),
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        // Six decimals: enough to tell 99.95% from 99.949%.
        ((n as f64 / d as f64) * 1e6).round() / 1e6
    }
}

/// One second of a run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Second {
    /// Seconds from the start.
    pub at: u64,
    /// Requests sent in that second.
    pub requests: u64,
    /// Of those, how many succeeded.
    pub successes: u64,
    /// Attempts those requests cost.
    pub attempts: u64,
}

/// The summary of a run: success rate, latency percentiles (hdrhistogram),
/// attempts per request (load amplification), the share served in the
/// client's own zone, per-endpoint counts and a per-second timeline.
///
/// Deterministic for the same records, and serialisable to JSON.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Requests sent.
    pub requests: u64,
    /// Requests that succeeded.
    pub successes: u64,
    /// `successes / requests`.
    pub success_rate: f64,
    /// Latency of every request, failed ones included.
    pub latency: Percentiles,
    /// Latency of the successful requests.
    pub success_latency: Percentiles,
    /// Attempts that reached a backend, per request.
    pub attempts_per_request: f64,
    /// Of the successful requests, the share served in the client's zone.
    pub local_zone_share: f64,
    /// Requests answered by each endpoint (the answer the client got).
    pub per_endpoint: BTreeMap<String, u64>,
    /// How requests ended: `success`, `status_503`, `error`, `gave_up`…
    pub outcomes: BTreeMap<String, u64>,
    /// Per second, by send time.
    pub timeline: Vec<Second>,
}

impl Report {
    /// Summarises `records`.
    pub fn from_records(records: &[Record]) -> Self {
        let requests = records.len() as u64;
        let successes = records.iter().filter(|r| r.outcome.is_success()).count() as u64;
        let attempts: u64 = records.iter().map(|r| u64::from(r.attempts)).sum();
        let local = records
            .iter()
            .filter(|r| r.outcome.is_success())
            .filter(|r| r.served_zone.as_deref() == Some(&*r.client_zone))
            .count() as u64;
        let mut per_endpoint = BTreeMap::new();
        for r in records {
            if let Some(e) = &r.served_by {
                *per_endpoint.entry(e.to_string()).or_insert(0) += 1;
            }
        }
        let mut outcomes = BTreeMap::new();
        for r in records {
            let key = match r.outcome {
                Outcome::Success => "success".to_owned(),
                Outcome::Status(s) => format!("status_{s}"),
                Outcome::Error => "error".to_owned(),
                Outcome::GaveUp => "gave_up".to_owned(),
            };
            *outcomes.entry(key).or_insert(0) += 1;
        }
        let mut timeline: Vec<Second> = Vec::new();
        for r in records {
            let at = r.start.as_secs();
            if timeline.len() <= at as usize {
                timeline.extend((timeline.len() as u64..=at).map(|at| Second {
                    at,
                    requests: 0,
                    successes: 0,
                    attempts: 0,
                }));
            }
            let s = &mut timeline[at as usize];
            s.requests += 1;
            s.successes += r.outcome.is_success() as u64;
            s.attempts += u64::from(r.attempts);
        }
        Report {
            requests,
            successes,
            success_rate: ratio(successes, requests),
            latency: Percentiles::of(records.iter().map(|r| r.latency)),
            success_latency: Percentiles::of(
                records
                    .iter()
                    .filter(|r| r.outcome.is_success())
                    .map(|r| r.latency),
            ),
            attempts_per_request: ratio(attempts, requests),
            local_zone_share: ratio(local, successes),
            per_endpoint,
            outcomes,
            timeline,
        }
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// A one-line summary.
    pub fn summary(&self) -> String {
        format!(
            "{} requests, success {:.4}%, p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, {:.3} attempts/request, {:.1}% local",
            self.requests,
            self.success_rate * 100.0,
            self.latency.p50_ms,
            self.latency.p99_ms,
            self.latency.p999_ms,
            self.attempts_per_request,
            self.local_zone_share * 100.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn record(ms: u64, outcome: Outcome, zone: &str, attempts: u32) -> Record {
        Record {
            client_zone: Arc::from("a"),
            start: Duration::from_millis(ms * 10),
            latency: Duration::from_millis(ms),
            outcome,
            attempts,
            served_by: outcome.is_success().then(|| format!("{zone}-1").into()),
            served_zone: outcome.is_success().then(|| zone.to_owned()),
        }
    }

    #[test]
    fn summarises_records() {
        let mut records: Vec<Record> = (1..=98)
            .map(|ms| record(ms, Outcome::Success, "a", 1))
            .collect();
        records.push(record(500, Outcome::Status(503), "a", 3));
        records.push(record(99, Outcome::Success, "b", 2));
        let r = Report::from_records(&records);
        assert_eq!(r.requests, 100);
        assert_eq!(r.successes, 99);
        assert_eq!(r.success_rate, 0.99);
        assert_eq!(r.attempts_per_request, 1.03);
        assert_eq!(r.local_zone_share, ratio(98, 99));
        // Three significant figures.
        let close =
            |got: f64, want: f64| assert!((got - want).abs() <= want * 1e-3, "{got} vs {want}");
        close(r.latency.p50_ms, 50.0);
        close(r.latency.max_ms, 500.0);
        close(r.success_latency.max_ms, 99.0);
        assert_eq!(r.per_endpoint["a-1"], 98);
        assert_eq!(r.outcomes["status_503"], 1);
        assert_eq!(r.timeline.iter().map(|s| s.requests).sum::<u64>(), 100);
        assert_eq!(Report::from_records(&records).to_json(), r.to_json());
    }

    #[test]
    fn empty_report_is_all_zero() {
        let r = Report::from_records(&[]);
        assert_eq!(r.success_rate, 0.0);
        assert_eq!(r.latency, Percentiles::default());
    }
}
