//! Lock-free sliding windows of call outcomes with O(1) snapshots.
//!
//! Two shapes, as resilience4j's circuit breaker has them:
//!
//! - [`CountWindow`]: the last `N` outcomes, a ring of `N` one-byte slots;
//! - [`TimeWindow`]: the outcomes of the last `duration`, a ring of `B`
//!   buckets of `duration / B` each, rolled lazily as time passes.
//!
//! Both keep running totals next to the ring, so [`Snapshot`]s cost a few
//! atomic loads however large the window is. Recording is a handful of
//! relaxed atomic operations and never blocks: in a full count window, a
//! success that replaces a success touches nothing but the ring.
//!
//! Under concurrent recording a snapshot may be off by the few calls in
//! flight at that instant (the totals are separate counters); once recording
//! stops, every snapshot equals a recount of the ring.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering::*};
use std::time::Duration;
use tokio::time::Instant;

/// One call's outcome as a window records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Succeeded within the slow-call threshold.
    Success,
    /// Failed within the slow-call threshold.
    Failure,
    /// Succeeded, but slower than the slow-call threshold.
    SlowSuccess,
    /// Failed, and slower than the slow-call threshold.
    SlowFailure,
}

impl Outcome {
    /// The outcome of a call that `failed` and was `slow`.
    pub const fn new(failed: bool, slow: bool) -> Self {
        match (failed, slow) {
            (false, false) => Outcome::Success,
            (true, false) => Outcome::Failure,
            (false, true) => Outcome::SlowSuccess,
            (true, true) => Outcome::SlowFailure,
        }
    }

    /// Whether the call failed.
    pub const fn is_failure(self) -> bool {
        matches!(self, Outcome::Failure | Outcome::SlowFailure)
    }

    /// Whether the call was slow.
    pub const fn is_slow(self) -> bool {
        matches!(self, Outcome::SlowSuccess | Outcome::SlowFailure)
    }

    /// Ring encoding: 0 is an empty slot.
    const fn code(self) -> u8 {
        1 + self.is_failure() as u8 + 2 * self.is_slow() as u8
    }

    const fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Outcome::Success),
            2 => Some(Outcome::Failure),
            3 => Some(Outcome::SlowSuccess),
            4 => Some(Outcome::SlowFailure),
            _ => None,
        }
    }
}

/// What a window holds at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Calls in the window.
    pub calls: u64,
    /// Failed calls (slow or not).
    pub failures: u64,
    /// Slow calls (failed or not).
    pub slow_calls: u64,
    /// `failures / calls`, in `0.0..=1.0`; `0.0` when empty.
    pub failure_rate: f64,
    /// `slow_calls / calls`, in `0.0..=1.0`; `0.0` when empty.
    pub slow_rate: f64,
}

impl Snapshot {
    /// A snapshot of these counts, with the rates computed.
    pub fn from_counts(calls: u64, failures: u64, slow_calls: u64) -> Self {
        let failures = failures.min(calls);
        let slow_calls = slow_calls.min(calls);
        let rate = |n: u64| {
            if calls == 0 {
                0.0
            } else {
                n as f64 / calls as f64
            }
        };
        Snapshot {
            calls,
            failures,
            slow_calls,
            failure_rate: rate(failures),
            slow_rate: rate(slow_calls),
        }
    }
}

/// Three counters that move together.
#[derive(Debug, Default)]
struct Totals {
    calls: AtomicI64,
    failures: AtomicI64,
    slow: AtomicI64,
}

impl Totals {
    /// Adds `sign` (±1) times one outcome.
    fn add(&self, o: Outcome, sign: i64) {
        self.calls.fetch_add(sign, Relaxed);
        if o.is_failure() {
            self.failures.fetch_add(sign, Relaxed);
        }
        if o.is_slow() {
            self.slow.fetch_add(sign, Relaxed);
        }
    }

    fn add_counts(&self, calls: i64, failures: i64, slow: i64) {
        if calls != 0 {
            self.calls.fetch_add(calls, Relaxed);
        }
        if failures != 0 {
            self.failures.fetch_add(failures, Relaxed);
        }
        if slow != 0 {
            self.slow.fetch_add(slow, Relaxed);
        }
    }

    /// Empties the counters, returning what they held.
    fn take(&self) -> (i64, i64, i64) {
        (
            self.calls.swap(0, Relaxed),
            self.failures.swap(0, Relaxed),
            self.slow.swap(0, Relaxed),
        )
    }

    fn snapshot(&self) -> Snapshot {
        // Concurrent updates can leave a counter briefly below zero.
        let get = |a: &AtomicI64| a.load(Relaxed).max(0) as u64;
        Snapshot::from_counts(get(&self.calls), get(&self.failures), get(&self.slow))
    }
}

/// The outcomes of the last `size` calls. See the [module docs](self).
#[derive(Debug)]
pub struct CountWindow {
    slots: Box<[AtomicU8]>,
    next: AtomicU64,
    totals: Totals,
}

impl CountWindow {
    /// A window over the last `size` calls.
    ///
    /// # Panics
    ///
    /// If `size` is zero. Layers validate their window size before building
    /// one, so a user's configuration never reaches this panic.
    pub fn new(size: usize) -> Self {
        assert!(size > 0, "count window size must be greater than zero");
        CountWindow {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicU64::new(0),
            totals: Totals::default(),
        }
    }

    /// The number of calls the window holds when full.
    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// Records one outcome, evicting the oldest when full.
    pub fn record(&self, outcome: Outcome) {
        let i = self.next.fetch_add(1, Relaxed) % self.slots.len() as u64;
        let new = outcome.code();
        let old = self.slots[i as usize].swap(new, Relaxed);
        if old == new {
            return;
        }
        match Outcome::from_code(old) {
            None => self.totals.add(outcome, 1),
            Some(old) => self.totals.add_counts(
                0,
                outcome.is_failure() as i64 - old.is_failure() as i64,
                outcome.is_slow() as i64 - old.is_slow() as i64,
            ),
        }
    }

    /// The counts and rates of the window, in O(1).
    pub fn snapshot(&self) -> Snapshot {
        self.totals.snapshot()
    }

    /// Empties the window.
    pub fn reset(&self) {
        for slot in self.slots.iter() {
            if let Some(old) = Outcome::from_code(slot.swap(0, Relaxed)) {
                self.totals.add(old, -1);
            }
        }
    }
}

/// The outcomes of the last `duration`, in buckets. See the
/// [module docs](self).
#[derive(Debug)]
pub struct TimeWindow {
    start: Instant,
    bucket_nanos: u64,
    buckets: Box<[Bucket]>,
    /// The newest epoch (bucket-length periods since `start`) rolled in.
    head: AtomicU64,
    totals: Totals,
}

#[derive(Debug, Default)]
struct Bucket {
    epoch: AtomicU64,
    counts: Totals,
}

impl TimeWindow {
    /// A window over the last `duration`, split into `buckets` buckets,
    /// starting at `now`.
    ///
    /// # Panics
    ///
    /// If `buckets` is zero or `duration / buckets` is under a nanosecond.
    /// Layers validate both before building one.
    pub fn new(duration: Duration, buckets: usize, now: Instant) -> Self {
        assert!(buckets > 0, "time window needs at least one bucket");
        let bucket_nanos = (duration.as_nanos() / buckets as u128).min(u128::from(u64::MAX)) as u64;
        assert!(
            bucket_nanos > 0,
            "time window buckets must be at least a nanosecond long"
        );
        TimeWindow {
            start: now,
            bucket_nanos,
            buckets: (0..buckets).map(|_| Bucket::default()).collect(),
            head: AtomicU64::new(0),
            totals: Totals::default(),
        }
    }

    /// The length the window covers.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.bucket_nanos) * self.buckets.len() as u32
    }

    fn epoch(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        (elapsed / u128::from(self.bucket_nanos)).min(u128::from(u64::MAX)) as u64
    }

    /// Rolls buckets forward to `epoch`, emptying those that fell out.
    fn advance(&self, epoch: u64) {
        let mut head = self.head.load(Acquire);
        while epoch > head {
            match self
                .head
                .compare_exchange_weak(head, epoch, AcqRel, Acquire)
            {
                Ok(_) => {
                    let n = self.buckets.len() as u64;
                    let first = (head + 1).max(epoch.saturating_sub(n - 1));
                    for k in first..=epoch {
                        let b = &self.buckets[(k % n) as usize];
                        b.epoch.store(k, Release);
                        let (c, f, s) = b.counts.take();
                        self.totals.add_counts(-c, -f, -s);
                    }
                    return;
                }
                Err(actual) => head = actual,
            }
        }
    }

    /// Records one outcome at `now`.
    ///
    /// An outcome older than the window (or whose bucket is being rolled at
    /// that instant) is dropped.
    pub fn record(&self, now: Instant, outcome: Outcome) {
        let epoch = self.epoch(now);
        self.advance(epoch);
        let b = &self.buckets[(epoch % self.buckets.len() as u64) as usize];
        if b.epoch.load(Acquire) != epoch {
            return;
        }
        b.counts.add(outcome, 1);
        self.totals.add(outcome, 1);
    }

    /// The counts and rates of the last `duration` before `now`, in O(1)
    /// (amortised: it may roll up to `buckets` stale buckets first).
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        self.advance(self.epoch(now));
        self.totals.snapshot()
    }

    /// Empties the window.
    pub fn reset(&self) {
        for b in self.buckets.iter() {
            let (c, f, s) = b.counts.take();
            self.totals.add_counts(-c, -f, -s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn outcome() -> impl Strategy<Value = Outcome> {
        (any::<bool>(), any::<bool>()).prop_map(|(f, s)| Outcome::new(f, s))
    }

    fn naive(outcomes: &[Outcome]) -> Snapshot {
        Snapshot::from_counts(
            outcomes.len() as u64,
            outcomes.iter().filter(|o| o.is_failure()).count() as u64,
            outcomes.iter().filter(|o| o.is_slow()).count() as u64,
        )
    }

    #[test]
    fn empty_windows_have_zero_rates() {
        let w = CountWindow::new(10);
        assert_eq!(w.snapshot(), Snapshot::default());
    }

    #[test]
    fn count_window_evicts_oldest() {
        let w = CountWindow::new(3);
        w.record(Outcome::Failure);
        w.record(Outcome::Failure);
        w.record(Outcome::Success);
        assert_eq!(w.snapshot().failures, 2);
        w.record(Outcome::SlowSuccess);
        let s = w.snapshot();
        assert_eq!((s.calls, s.failures, s.slow_calls), (3, 1, 1));
        w.reset();
        assert_eq!(w.snapshot(), Snapshot::default());
    }

    #[tokio::test(start_paused = true)]
    async fn time_window_forgets_after_its_duration() {
        let w = TimeWindow::new(Duration::from_secs(10), 10, Instant::now());
        w.record(Instant::now(), Outcome::Failure);
        tokio::time::advance(Duration::from_secs(5)).await;
        w.record(Instant::now(), Outcome::Success);
        assert_eq!(w.snapshot(Instant::now()).calls, 2);
        tokio::time::advance(Duration::from_millis(5_500)).await;
        let s = w.snapshot(Instant::now());
        assert_eq!((s.calls, s.failures), (1, 0));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(w.snapshot(Instant::now()), Snapshot::default());
    }

    proptest! {
        #[test]
        fn count_window_snapshot_equals_naive_recount(
            size in 1usize..50,
            outcomes in proptest::collection::vec(outcome(), 0..300),
        ) {
            let w = CountWindow::new(size);
            for (i, o) in outcomes.iter().enumerate() {
                w.record(*o);
                let from = (i + 1).saturating_sub(size);
                prop_assert_eq!(w.snapshot(), naive(&outcomes[from..=i]));
            }
        }

        #[test]
        fn time_window_snapshot_equals_naive_recount(
            buckets in 1usize..12,
            events in proptest::collection::vec((0u64..3_000, outcome()), 0..200),
        ) {
            // Bucket length 100 ms; window = buckets · 100 ms.
            let start = Instant::now();
            let w = TimeWindow::new(Duration::from_millis(100) * buckets as u32, buckets, start);
            let mut t = 0u64;
            let mut seen: Vec<(u64, Outcome)> = Vec::new();
            for (dt, o) in events {
                t += dt / 10;
                let now = start + Duration::from_millis(t);
                w.record(now, o);
                seen.push((t, o));
                // The window holds the current bucket and the `buckets - 1` before it.
                let epoch = t / 100;
                let live: Vec<Outcome> = seen
                    .iter()
                    .filter(|(at, _)| at / 100 + buckets as u64 > epoch)
                    .map(|(_, o)| *o)
                    .collect();
                prop_assert_eq!(w.snapshot(now), naive(&live));
            }
        }
    }

    #[test]
    fn concurrent_recording_settles_to_the_recount() {
        let w = std::sync::Arc::new(CountWindow::new(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        w.record(Outcome::new((i + t) % 3 == 0, i % 5 == 0));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let recount: Vec<Outcome> = w
            .slots
            .iter()
            .filter_map(|s| Outcome::from_code(s.load(Relaxed)))
            .collect();
        assert_eq!(recount.len(), 64);
        assert_eq!(w.snapshot(), naive(&recount));
    }
}
