//! The hedge trigger: a latency percentile over a rotating histogram.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::time::Instant;

/// No hedge.
const NONE: u64 = u64::MAX;
/// Two significant figures: 1% resolution, a few kilobytes per histogram.
const SIGFIGS: u8 = 2;

pub(crate) struct LatencyTracker {
    quantile: f64,
    min_delay_us: u64,
    top_us: u64,
    min_samples: u64,
    period: Duration,
    origin: Instant,
    /// When the next rotation is due, in nanoseconds since `origin`.
    next_rotation_ns: AtomicU64,
    /// The current hedge delay in microseconds, or [`NONE`].
    delay_us: AtomicU64,
    hists: Mutex<Hists>,
    gauge: metrics::Gauge,
}

struct Hists {
    /// The last full period.
    read: Histogram<u64>,
    /// The period in progress.
    write: Histogram<u64>,
    next_rotation: Instant,
}

impl LatencyTracker {
    pub(crate) fn new(
        quantile: f64,
        min_delay: Duration,
        max_latency: Duration,
        min_samples: u64,
        period: Duration,
        gauge: metrics::Gauge,
    ) -> Self {
        let top_us = (max_latency.as_micros() as u64).max(2);
        let hist = || {
            Histogram::new_with_bounds(1, top_us, SIGFIGS)
                .expect("bounds 1..=top with top >= 2 are valid")
        };
        let origin = Instant::now();
        let tracker = LatencyTracker {
            quantile,
            min_delay_us: min_delay.as_micros() as u64,
            top_us,
            min_samples: min_samples.max(1),
            period,
            origin,
            next_rotation_ns: AtomicU64::new(period.as_nanos() as u64),
            delay_us: AtomicU64::new(NONE),
            hists: Mutex::new(Hists {
                read: hist(),
                write: hist(),
                next_rotation: origin + period,
            }),
            gauge,
        };
        tracker.gauge.set(0.0);
        tracker
    }

    /// The hedge delay for a request starting now, or `None` while there is
    /// too little data or the percentile is at the histogram's top.
    pub(crate) fn delay(&self, now: Instant) -> Option<Duration> {
        self.maybe_rotate(now);
        match self.delay_us.load(Ordering::Acquire) {
            NONE => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Records one attempt's latency.
    pub(crate) fn record(&self, now: Instant, latency: Duration) {
        let mut h = self.hists.lock();
        self.rotate_locked(&mut h, now);
        h.write
            .saturating_record((latency.as_micros() as u64).clamp(1, self.top_us));
        // Until a full period is in, read the partial one every
        // `min_samples` records, so hedging starts without a period's wait.
        if h.read.len() < self.min_samples && h.write.len().is_multiple_of(self.min_samples) {
            let d = self.compute(&h.write);
            self.store(d);
        }
    }

    fn maybe_rotate(&self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos() as u64;
        if elapsed >= self.next_rotation_ns.load(Ordering::Acquire) {
            let mut h = self.hists.lock();
            self.rotate_locked(&mut h, now);
        }
    }

    fn rotate_locked(&self, h: &mut Hists, now: Instant) {
        if now < h.next_rotation {
            return;
        }
        let behind = now.saturating_duration_since(h.next_rotation).as_nanos()
            / self.period.as_nanos().max(1);
        if behind == 0 {
            std::mem::swap(&mut h.read, &mut h.write);
            h.write.reset();
            h.next_rotation += self.period;
        } else {
            // More than a period went by with no record: both are stale.
            h.read.reset();
            h.write.reset();
            h.next_rotation = now + self.period;
        }
        self.next_rotation_ns.store(
            h.next_rotation
                .saturating_duration_since(self.origin)
                .as_nanos() as u64,
            Ordering::Release,
        );
        let d = self.compute(&h.read);
        self.store(d);
    }

    fn compute(&self, h: &Histogram<u64>) -> u64 {
        if h.len() < self.min_samples {
            return NONE;
        }
        let v = h.value_at_quantile(self.quantile);
        if v >= self.top_us {
            return NONE;
        }
        v.max(self.min_delay_us)
    }

    fn store(&self, us: u64) {
        self.delay_us.store(us, Ordering::Release);
        self.gauge.set(if us == NONE {
            0.0
        } else {
            us as f64 / 1_000_000.0
        });
    }
}

impl std::fmt::Debug for LatencyTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyTracker")
            .field("quantile", &self.quantile)
            .field("period", &self.period)
            .field("delay_us", &self.delay_us.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
