//! Per-endpoint statistics shared between the balancer and its response
//! futures: requests in flight, the PeakEWMA estimate and the outlier
//! counters. Lock-free: response futures complete on any thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::time::Instant;
use watertight_core::{Classify, Endpoint, EndpointId, Hint, ResponseClass};

use crate::event::OutlierEvent;
use crate::handle::{EndpointState, EndpointStatus, View};
use crate::hints::ServerHints;
use crate::outlier::Detection;

/// A duration in nanoseconds as `f64`, without the slow `u128` conversion.
fn nanos_f64(d: Duration) -> f64 {
    d.as_secs() as f64 * 1e9 + f64::from(d.subsec_nanos())
}

/// One call in the `interval` counter's high half.
const CALL: u64 = 1 << 32;
const LOW: u64 = u32::MAX as u64;

/// What futures and the handle ask of the balancer; applied in its next
/// `poll_ready`.
#[derive(Debug)]
pub(crate) enum Request {
    /// A consecutive-failure detector fired for the endpoint in `slot`.
    Eject {
        slot: u32,
        gen: u32,
        detection: Detection,
    },
    /// Eject by hand.
    ManualEject(EndpointId),
    /// Return to service by hand.
    ManualUneject(EndpointId),
}

/// State shared by the balancer, its response futures and its handle.
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    /// Woken when a request is queued, so a pending balancer acts on it.
    pub(crate) waker: AtomicWaker,
    pub(crate) dirty: AtomicBool,
    pub(crate) requests: Mutex<Vec<Request>>,
    /// Routing decisions, indexed by `Decision as usize`.
    pub(crate) decisions: [AtomicU64; 5],
    pub(crate) view: Mutex<View>,
    pub(crate) log: Mutex<VecDeque<OutlierEvent>>,
    pub(crate) log_capacity: usize,
    pub(crate) endpoints: Mutex<Vec<Arc<dyn StatusSource>>>,
}

impl Shared {
    pub(crate) fn new(name: Arc<str>, log_capacity: usize) -> Self {
        Shared {
            name,
            waker: AtomicWaker::new(),
            dirty: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
            decisions: Default::default(),
            view: Mutex::new(View::default()),
            log: Mutex::new(VecDeque::new()),
            log_capacity,
            endpoints: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn request(&self, request: Request) {
        self.requests.lock().push(request);
        self.dirty.store(true, std::sync::atomic::Ordering::Release);
        self.waker.wake();
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Per-balancer settings the futures need.
pub(crate) struct Hooks<T, E> {
    pub(crate) classify: Box<dyn Classify<T, E> + Send + Sync>,
    pub(crate) hints: Box<dyn ServerHints<T> + Send + Sync>,
    pub(crate) epoch: Instant,
    pub(crate) tau_ns: f64,
    pub(crate) penalty_ns: f64,
    pub(crate) max_hint_ns: f64,
    /// 0 when the detector is off.
    pub(crate) consecutive_5xx: u32,
    pub(crate) consecutive_gateway: u32,
    pub(crate) outliers: bool,
    pub(crate) shared: Arc<Shared>,
}

impl<T, E> Hooks<T, E> {
    pub(crate) fn nanos(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.epoch);
        d.as_secs() * 1_000_000_000 + u64::from(d.subsec_nanos())
    }
}

/// The atomics of one endpoint.
#[derive(Debug)]
pub(crate) struct EndpointStats {
    pub(crate) active: AtomicU32,
    /// PeakEWMA estimate in nanoseconds (`f64` bits) and when it was last
    /// updated (nanoseconds since the balancer's epoch). A race between two
    /// completions may lose one sample; the estimate stays sound.
    rtt: AtomicU64,
    stamp: AtomicU64,
    /// Failures in a row (low half) and retryable failures in a row (high).
    consecutive: AtomicU64,
    /// Calls (high half) and successes (low half) this interval.
    interval: AtomicU64,
    state: AtomicU8,
    multiplier: AtomicU32,
}

impl EndpointStats {
    pub(crate) fn new(default_rtt_ns: f64, now_ns: u64) -> Self {
        EndpointStats {
            active: AtomicU32::new(0),
            rtt: AtomicU64::new(default_rtt_ns.to_bits()),
            stamp: AtomicU64::new(now_ns),
            consecutive: AtomicU64::new(0),
            interval: AtomicU64::new(0),
            state: AtomicU8::new(EndpointState::Healthy as u8),
            multiplier: AtomicU32::new(0),
        }
    }

    /// The RTT estimate at `now_ns`, decayed towards zero since the last
    /// sample.
    pub(crate) fn rtt(&self, now_ns: u64, tau_ns: f64) -> f64 {
        let rtt = f64::from_bits(self.rtt.load(Relaxed));
        let stamp = self.stamp.load(Relaxed);
        let dt = now_ns.saturating_sub(stamp) as f64;
        rtt * (-dt / tau_ns).exp()
    }

    /// Whether this endpoint's PeakEWMA cost `rtt · (pending + 1)` is below
    /// `other`'s now. Both estimates decay by `exp(-(now - stamp) / τ)`, so
    /// the common `exp(-now / τ)` cancels: one `exp` of the stamps'
    /// difference, and no clock read.
    pub(crate) fn cheaper(&self, other: &EndpointStats, tau_ns: f64) -> bool {
        let a = f64::from_bits(self.rtt.load(Relaxed)) * f64::from(self.active.load(Relaxed) + 1);
        let b = f64::from_bits(other.rtt.load(Relaxed)) * f64::from(other.active.load(Relaxed) + 1);
        let ds = self.stamp.load(Relaxed) as f64 - other.stamp.load(Relaxed) as f64;
        a * (ds / tau_ns).clamp(-700.0, 700.0).exp() < b
    }

    /// Adds an RTT sample: a sample above the estimate replaces it; one
    /// below is blended in by how long ago the estimate was last updated.
    pub(crate) fn observe(&self, sample_ns: f64, now_ns: u64, tau_ns: f64) {
        let rtt = f64::from_bits(self.rtt.load(Relaxed));
        let stamp = self.stamp.load(Relaxed);
        let next = if sample_ns > rtt {
            sample_ns
        } else {
            let w = (-(now_ns.saturating_sub(stamp) as f64) / tau_ns).exp();
            rtt * w + sample_ns * (1.0 - w)
        };
        self.rtt.store(next.to_bits(), Relaxed);
        self.stamp.store(now_ns.max(stamp), Relaxed);
    }

    /// Counts one classified outcome; returns the detectors that fired.
    pub(crate) fn record(
        &self,
        class: ResponseClass,
        c5xx: u32,
        cgw: u32,
    ) -> [Option<Detection>; 2] {
        match class {
            ResponseClass::Success => {
                self.interval.fetch_add(CALL | 1, Relaxed);
                if self.consecutive.load(Relaxed) != 0 {
                    self.consecutive.store(0, Relaxed);
                }
                [None, None]
            }
            ResponseClass::Failure { retryable } => {
                self.interval.fetch_add(CALL, Relaxed);
                let mut cur = self.consecutive.load(Relaxed);
                loop {
                    let lo = (cur as u32).saturating_add(1);
                    let hi = if retryable {
                        ((cur >> 32) as u32).saturating_add(1)
                    } else {
                        0
                    };
                    let next = (u64::from(hi) << 32) | u64::from(lo);
                    match self
                        .consecutive
                        .compare_exchange_weak(cur, next, Relaxed, Relaxed)
                    {
                        Ok(_) => {
                            return [
                                (lo == c5xx).then_some(Detection::Consecutive5xx),
                                (retryable && hi == cgw)
                                    .then_some(Detection::ConsecutiveGatewayFailure),
                            ];
                        }
                        Err(actual) => cur = actual,
                    }
                }
            }
            ResponseClass::Ignored => [None, None],
        }
    }

    pub(crate) fn reset_consecutive(&self) {
        self.consecutive.store(0, Relaxed);
    }

    /// This interval's `(calls, successes)`, and a new interval.
    pub(crate) fn take_interval(&self) -> (u64, u64) {
        let v = self.interval.swap(0, Relaxed);
        (v >> 32, v & LOW)
    }

    pub(crate) fn set_state(&self, state: EndpointState) {
        self.state.store(state as u8, Relaxed);
    }

    pub(crate) fn set_multiplier(&self, k: u32) {
        self.multiplier.store(k, Relaxed);
    }
}

/// One endpoint's statistics with what its futures need.
pub(crate) struct Tracker<T, E> {
    pub(crate) stats: EndpointStats,
    /// Replaced when discovery changes the endpoint's metadata.
    pub(crate) endpoint: Mutex<Arc<Endpoint>>,
    pub(crate) slot: u32,
    pub(crate) gen: u32,
    pub(crate) hooks: Arc<Hooks<T, E>>,
}

impl<T, E> Tracker<T, E> {
    /// Classifies a result and feeds PeakEWMA and outlier detection.
    pub(crate) fn complete(&self, result: &Result<T, E>, start: Instant) {
        let h = &*self.hooks;
        let class = h.classify.classify(result);
        let now = Instant::now();
        let mut sample = nanos_f64(now.saturating_duration_since(start));
        if class.is_failure() {
            sample = sample.max(h.penalty_ns);
            if let Ok(res) = result {
                if let Some(Hint::RetryAfter(d)) = h.hints.hint(res) {
                    sample = sample.max((d.as_nanos() as f64).min(h.max_hint_ns));
                }
            }
        }
        self.stats.observe(sample, h.nanos(now), h.tau_ns);
        if h.outliers {
            for detection in self
                .stats
                .record(class, h.consecutive_5xx, h.consecutive_gateway)
                .into_iter()
                .flatten()
            {
                h.shared.request(Request::Eject {
                    slot: self.slot,
                    gen: self.gen,
                    detection,
                });
            }
        }
    }

    /// A call dropped before it completed: its time so far is a sample.
    pub(crate) fn cancelled(&self, start: Instant) {
        let h = &*self.hooks;
        let now = Instant::now();
        let sample = nanos_f64(now.saturating_duration_since(start));
        self.stats.observe(sample, h.nanos(now), h.tau_ns);
    }
}

/// What the handle reads of an endpoint.
pub(crate) trait StatusSource: Send + Sync {
    fn status(&self) -> EndpointStatus;
}

impl<T, E> StatusSource for Tracker<T, E>
where
    Hooks<T, E>: Send + Sync,
{
    fn status(&self) -> EndpointStatus {
        let now = Instant::now();
        let h = &*self.hooks;
        EndpointStatus {
            endpoint: self.endpoint.lock().clone(),
            state: EndpointState::from_u8(self.stats.state.load(Relaxed)),
            active: self.stats.active.load(Relaxed),
            rtt: Duration::from_nanos(self.stats.rtt(h.nanos(now), h.tau_ns) as u64),
            ejection_multiplier: self.stats.multiplier.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_ewma_jumps_to_peaks_and_blends_lower_samples() {
        let tau = 10e9;
        let s = EndpointStats::new(30e6, 0);
        assert_eq!(s.rtt(0, tau), 30e6);
        s.observe(100e6, 0, tau);
        assert_eq!(s.rtt(0, tau), 100e6);
        // A lower sample ten seconds later is weighted 1 - 1/e.
        s.observe(10e6, 10_000_000_000, tau);
        let expected = 100e6 * (-1f64).exp() + 10e6 * (1.0 - (-1f64).exp());
        assert!((s.rtt(10_000_000_000, tau) - expected).abs() < 1.0);
        // Idle, it decays towards zero.
        assert!(s.rtt(40_000_000_000, tau) < expected * 0.06);
    }

    #[test]
    fn cheaper_compares_decayed_costs() {
        let tau = 10e9;
        let old = EndpointStats::new(100e6, 0);
        let new = EndpointStats::new(40e6, 10_000_000_000);
        // At 10 s the old estimate has decayed to 100/e ≈ 36.8 ms.
        assert!(old.cheaper(&new, tau));
        assert!(!new.cheaper(&old, tau));
        new.active.store(1, Relaxed);
        assert!(old.cheaper(&new, tau));
        old.active.store(2, Relaxed);
        assert!(!old.cheaper(&new, tau));
    }

    #[test]
    fn consecutive_counters_fire_once_at_the_threshold() {
        let s = EndpointStats::new(1.0, 0);
        let gw = ResponseClass::RETRYABLE;
        for _ in 0..4 {
            assert_eq!(s.record(gw, 5, 5), [None, None]);
        }
        assert_eq!(
            s.record(gw, 5, 5),
            [
                Some(Detection::Consecutive5xx),
                Some(Detection::ConsecutiveGatewayFailure)
            ]
        );
        assert_eq!(s.record(gw, 5, 5), [None, None]);
        // A non-retryable failure resets only the gateway count.
        s.reset_consecutive();
        for _ in 0..4 {
            s.record(gw, 5, 5);
        }
        assert_eq!(
            s.record(ResponseClass::FATAL, 5, 5),
            [Some(Detection::Consecutive5xx), None]
        );
        s.record(ResponseClass::Success, 5, 5);
        assert_eq!(s.take_interval(), (12, 1));
        assert_eq!(s.take_interval(), (0, 0));
    }
}
