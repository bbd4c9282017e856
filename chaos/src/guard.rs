//! The steady-state guard behind [`AbortWhen`].
//!
//! The Principles of Chaos Engineering ask an experiment to state the
//! steady state it expects ("the error rate stays under 5%") and to stop as
//! soon as it is disproved; Netflix's ChAP stops an experiment by itself
//! when its key metric deviates. This guard measures the traffic the layer
//! sees over a sliding window: the failure rate in a
//! [`TimeWindow`] of ten buckets, and the latency in ten per-bucket
//! histograms (HdrHistogram, two significant digits) merged for the p99.
//!
//! The failure rate is judged on every result (a few atomic operations);
//! the p99 is judged by the experiment's task ten times per window.

use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::time::Instant;
use watertight_core::window::Outcome;
use watertight_core::{ResponseClass, TimeWindow};

use crate::experiment::AbortWhen;

const BUCKETS: u32 = 10;
/// Latencies are recorded in microseconds, up to an hour.
const MAX_MICROS: u64 = 3_600_000_000;

pub(crate) struct Guard {
    spec: AbortWhen,
    errors: TimeWindow,
    latency: Option<LatencyWindow>,
}

struct LatencyWindow {
    start: Instant,
    slice: Duration,
    slices: Vec<Mutex<Slice>>,
}

struct Slice {
    epoch: u64,
    hist: Histogram<u64>,
}

impl LatencyWindow {
    fn new(window: Duration, now: Instant) -> Self {
        let slices = (0..BUCKETS)
            .map(|_| {
                Mutex::new(Slice {
                    epoch: 0,
                    hist: Histogram::new_with_bounds(1, MAX_MICROS, 2)
                        .expect("valid histogram bounds"),
                })
            })
            .collect();
        LatencyWindow {
            start: now,
            slice: window / BUCKETS,
            slices,
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        let n = now.saturating_duration_since(self.start).as_nanos() / self.slice.as_nanos().max(1);
        n.min(u128::from(u64::MAX)) as u64
    }

    fn record(&self, now: Instant, elapsed: Duration) {
        let epoch = self.epoch(now);
        let mut slice = self.slices[(epoch % u64::from(BUCKETS)) as usize].lock();
        if slice.epoch != epoch {
            slice.epoch = epoch;
            slice.hist.reset();
        }
        let micros = elapsed.as_micros().clamp(1, u128::from(MAX_MICROS)) as u64;
        slice.hist.saturating_record(micros);
    }

    /// (calls, p99) over the window ending at `now`.
    fn p99(&self, now: Instant) -> (u64, Duration) {
        let epoch = self.epoch(now);
        let oldest = epoch.saturating_sub(u64::from(BUCKETS) - 1);
        let mut merged: Option<Histogram<u64>> = None;
        for slice in &self.slices {
            let slice = slice.lock();
            if slice.epoch < oldest || slice.epoch > epoch || slice.hist.is_empty() {
                continue;
            }
            match &mut merged {
                None => merged = Some(slice.hist.clone()),
                Some(m) => {
                    // Same bounds on both sides: addition cannot fail.
                    let _ = m.add(&slice.hist);
                }
            }
        }
        match merged {
            None => (0, Duration::ZERO),
            Some(h) => (h.len(), Duration::from_micros(h.value_at_quantile(0.99))),
        }
    }
}

impl Guard {
    pub(crate) fn new(spec: AbortWhen, now: Instant) -> Self {
        let latency = spec.p99_above.map(|_| LatencyWindow::new(spec.window, now));
        Guard {
            errors: TimeWindow::new(spec.window, BUCKETS as usize, now),
            latency,
            spec,
        }
    }

    /// How often the experiment's task judges the p99.
    pub(crate) fn tick(&self) -> Duration {
        (self.spec.window / BUCKETS).max(Duration::from_millis(1))
    }

    pub(crate) fn needs_latency(&self) -> bool {
        self.latency.is_some()
    }

    /// Records one result; returns why the experiment must stop, if the
    /// failure rate just crossed its bound.
    pub(crate) fn record(
        &self,
        now: Instant,
        class: ResponseClass,
        elapsed: Option<Duration>,
    ) -> Option<String> {
        let failed = match class {
            ResponseClass::Success => false,
            ResponseClass::Failure { .. } => true,
            ResponseClass::Ignored => return None,
        };
        self.errors.record(now, Outcome::new(failed, false));
        if let (Some(lat), Some(elapsed)) = (&self.latency, elapsed) {
            lat.record(now, elapsed);
        }
        self.check_errors(now)
    }

    fn check_errors(&self, now: Instant) -> Option<String> {
        let bound = self.spec.error_rate_above?;
        let s = self.errors.snapshot(now);
        (s.calls >= self.spec.min_calls && s.failure_rate > bound).then(|| {
            format!(
                "error rate {:.4} above {bound} over the last {} ({} calls, {} failures)",
                s.failure_rate,
                humantime::format_duration(self.spec.window),
                s.calls,
                s.failures
            )
        })
    }

    /// Judges both bounds; returns why the experiment must stop, if it
    /// must.
    pub(crate) fn check(&self, now: Instant) -> Option<String> {
        if let Some(reason) = self.check_errors(now) {
            return Some(reason);
        }
        let (bound, lat) = (self.spec.p99_above?, self.latency.as_ref()?);
        let (calls, p99) = lat.p99(now);
        (calls >= self.spec.min_calls && p99 > bound).then(|| {
            format!(
                "p99 latency {} above {} over the last {} ({calls} calls)",
                humantime::format_duration(p99),
                humantime::format_duration(bound),
                humantime::format_duration(self.spec.window),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failure_rate_trips_only_past_min_calls_and_bound() {
        let g = Guard::new(
            AbortWhen::error_rate_above(0.5).min_calls(4),
            Instant::now(),
        );
        let now = Instant::now();
        assert_eq!(g.record(now, ResponseClass::RETRYABLE, None), None);
        assert_eq!(g.record(now, ResponseClass::RETRYABLE, None), None);
        assert_eq!(g.record(now, ResponseClass::Ignored, None), None);
        assert_eq!(g.record(now, ResponseClass::Success, None), None);
        // 3 failures of 4 calls: 0.75 > 0.5.
        assert!(g.record(now, ResponseClass::FATAL, None).is_some());

        // At the bound is not above it.
        let g = Guard::new(
            AbortWhen::error_rate_above(0.5).min_calls(4),
            Instant::now(),
        );
        for class in [ResponseClass::FATAL, ResponseClass::Success].repeat(2) {
            assert_eq!(g.record(now, class, None), None);
        }
        assert!(g.record(now, ResponseClass::FATAL, None).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_leave_the_window() {
        let spec = AbortWhen::error_rate_above(0.5)
            .min_calls(3)
            .window(Duration::from_secs(10));
        let recent = Guard::new(spec.clone(), Instant::now());
        let old = Guard::new(spec, Instant::now());
        for g in [&recent, &old] {
            assert_eq!(
                g.record(Instant::now(), ResponseClass::RETRYABLE, None),
                None
            );
            assert_eq!(
                g.record(Instant::now(), ResponseClass::RETRYABLE, None),
                None
            );
        }
        // Within the window, two failures of three calls trip the guard.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(recent
            .record(Instant::now(), ResponseClass::Success, None)
            .is_some());
        // Past it, they count no more: three successes alone.
        tokio::time::advance(Duration::from_secs(6)).await;
        for _ in 0..3 {
            assert_eq!(
                old.record(Instant::now(), ResponseClass::Success, None),
                None
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn p99_trips_when_the_tail_is_slow() {
        let g = Guard::new(
            AbortWhen::p99_above(Duration::from_millis(100)).min_calls(100),
            Instant::now(),
        );
        let now = Instant::now();
        for i in 0..100 {
            let ms = if i < 99 { 10 } else { 500 };
            g.record(now, ResponseClass::Success, Some(Duration::from_millis(ms)));
        }
        assert_eq!(g.check(now), None, "one slow call in 100 is above the p99");
        g.record(
            now,
            ResponseClass::Success,
            Some(Duration::from_millis(500)),
        );
        let reason = g.check(now).expect("p99 above 100ms");
        assert!(reason.contains("p99"), "{reason}");
    }
}
