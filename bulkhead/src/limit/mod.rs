//! Limit algorithms for [`AdaptiveConcurrency`](crate::AdaptiveConcurrency):
//! how a concurrency limit follows what the service's latency and drops say
//! about its capacity.
//!
//! An adaptive limiter hands every completed call to its algorithm as a
//! [`Sample`] (start, round-trip time, permits in flight when it started, and
//! whether it was *dropped*: a retryable failure such as a `503`, a `429` or
//! a timeout, by the layer's [`Classify`](watertight_core::Classify)), and
//! admits up to the limit the algorithm returns. The algorithms, each with
//! its anchor's formula and defaults:
//!
//! | algorithm | signal | anchor |
//! |---|---|---|
//! | [`Aimd`] | drops and timeouts | Netflix concurrency-limits `AIMDLimit` |
//! | [`Vegas`] | queueing estimated from RTT over the no-load RTT | Netflix `VegasLimit` (TCP Vegas) |
//! | [`Gradient2`] | short RTT against a long-term average | Netflix `Gradient2Limit` |
//! | [`EnvoyGradient`] | sampled RTT against a periodically re-measured minimum | Envoy's adaptive concurrency filter |
//!
//! [`Windowed`] aggregates samples into windows (Netflix `WindowedLimit`)
//! before an algorithm sees them: one update per window, from the window's
//! average (or a percentile) RTT, its largest in-flight count and whether it
//! held a drop. AIMD, Vegas and Gradient2 are meant to run windowed (AIMD's
//! "+1" is then per window); Envoy's controller aggregates by itself.
//!
//! Any type implementing [`LimitAlgorithm`] plugs in.
//!
//! # Choosing
//!
//! The default of [`AdaptiveConcurrencyLayer`](crate::AdaptiveConcurrencyLayer)
//! is [`Vegas`], windowed. It estimates the queue at the service directly,
//! so it stops growing a few requests past the service's capacity without
//! needing the service to shed (in this crate's convergence tests it
//! settles 10% above a server's capacity with nothing shed, where the
//! others settle at the point the server starts shedding), and its floor is
//! one permit, so several clients in front of a small backend pool can
//! share the pool. Its baseline is the lowest windowed RTT seen, re-probed
//! every `30 × limit` windows: a service that becomes slower for good looks
//! queued until then.
//!
//! Netflix recommends [`Gradient2`] for servers: it follows long-term
//! latency changes, tolerates RTT up to 1.5× the long-term average and
//! never goes below 20 permits, which keeps a server with bursty request
//! costs from shedding too eagerly, but lets a set of clients jointly keep
//! a small backend more than 1.5× over its capacity. [`Aimd`] needs drops
//! (a server that sheds, or timeouts) to find the limit. [`EnvoyGradient`]
//! re-measures its baseline at a pinned low limit every minute and grows
//! fast (up to 2× per 100 ms) while latency is within 25% of it.
//!
//! # Drops
//!
//! A drop means the service is shedding or timing out: every algorithm here
//! lowers its limit on one. AIMD and Vegas do so as Netflix's do; Netflix's
//! Gradient2 and Envoy's controller ignore drops (they live inside a server,
//! which sees no drops of its own), and here they multiply the limit by
//! `backoff_ratio` (default 0.9, as AIMD) so a client-side limiter stops
//! pushing a server that sheds; `backoff_ratio = 1.0` restores the anchors'
//! behaviour. The RTT of a dropped call (a fast `503`, a timeout) says
//! nothing about queueing and never feeds an RTT baseline.

pub mod aimd;
pub mod envoy;
pub mod gradient2;
pub mod vegas;
pub mod windowed;

use std::time::Duration;

use tokio::time::Instant;

pub use aimd::{Aimd, AimdConfig};
pub use envoy::{EnvoyGradient, EnvoyGradientConfig};
pub use gradient2::{Gradient2, Gradient2Config, QueueSize};
pub use vegas::{Vegas, VegasConfig};
pub use windowed::{WindowConfig, Windowed};

/// One completed call, as a limit algorithm sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sample {
    /// When the call was admitted.
    pub start: Instant,
    /// How long it took.
    pub rtt: Duration,
    /// Permits in flight when it was admitted (itself included); for a
    /// windowed sample, the largest in the window.
    pub in_flight: u32,
    /// Whether it was dropped: shed, throttled or timed out.
    pub dropped: bool,
}

impl Sample {
    /// A sample.
    pub fn new(start: Instant, rtt: Duration, in_flight: u32, dropped: bool) -> Self {
        Sample {
            start,
            rtt,
            in_flight,
            dropped,
        }
    }

    /// When the call completed.
    pub fn end(&self) -> Instant {
        self.start + self.rtt
    }
}

/// Decides a concurrency limit from samples.
///
/// An [`AdaptiveConcurrency`](crate::AdaptiveConcurrency) calls
/// [`update`](Self::update) once per completed call, under a lock, and
/// admits up to the returned limit (clamped to `1..=2^30`).
pub trait LimitAlgorithm: Send + 'static {
    /// The limit before any sample.
    fn initial_limit(&self) -> u32;

    /// Learns from one sample; returns the new limit.
    fn update(&mut self, sample: &Sample) -> u32;
}

impl<A: LimitAlgorithm + ?Sized> LimitAlgorithm for Box<A> {
    fn initial_limit(&self) -> u32 {
        (**self).initial_limit()
    }

    fn update(&mut self, sample: &Sample) -> u32 {
        (**self).update(sample)
    }
}

/// An exponential moving average over `window` samples that starts as the
/// plain average of its first `warmup` samples (Netflix's
/// `ExpAvgMeasurement`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ExpAvg {
    value: f64,
    count: u32,
    factor: f64,
    warmup: u32,
}

impl ExpAvg {
    pub(crate) fn new(window: u32, warmup: u32) -> Self {
        ExpAvg {
            value: 0.0,
            count: 0,
            factor: 2.0 / (f64::from(window) + 1.0),
            warmup,
        }
    }

    pub(crate) fn add(&mut self, sample: f64) -> f64 {
        if self.count < self.warmup {
            self.count += 1;
            self.value += (sample - self.value) / f64::from(self.count);
        } else {
            self.value = self.value * (1.0 - self.factor) + sample * self.factor;
        }
        self.value
    }

    pub(crate) fn get(&self) -> f64 {
        self.value
    }

    pub(crate) fn scale(&mut self, by: f64) {
        self.value *= by;
    }
}

/// The `p` quantile (nearest rank) of `values`, sorting them.
pub(crate) fn percentile(values: &mut [Duration], p: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (p * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

/// A seeded or entropy-seeded small RNG.
pub(crate) fn rng(seed: Option<u64>) -> rand::rngs::SmallRng {
    use rand::SeedableRng;
    match seed {
        Some(s) => rand::rngs::SmallRng::seed_from_u64(s),
        None => rand::rngs::SmallRng::from_rng(&mut rand::rng()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_avg_warms_up_as_a_plain_average_then_decays() {
        let mut a = ExpAvg::new(3, 2);
        assert_eq!(a.add(10.0), 10.0);
        assert_eq!(a.add(20.0), 15.0);
        // factor 2 / (3 + 1) = 0.5
        assert_eq!(a.add(25.0), 20.0);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let ms = Duration::from_millis;
        let mut v = vec![ms(5), ms(1), ms(4), ms(2), ms(3)];
        assert_eq!(percentile(&mut v, 0.5), Some(ms(3)));
        assert_eq!(percentile(&mut v, 1.0), Some(ms(5)));
        assert_eq!(percentile(&mut v, 0.01), Some(ms(1)));
        assert_eq!(percentile(&mut [], 0.5), None);
    }
}
