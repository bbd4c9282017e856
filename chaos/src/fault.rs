//! The faults an experiment injects, and how often.
//!
//! | fault | effect | where it acts |
//! |---|---|---|
//! | [`Fault::Latency`] | waits, then calls the inner service | the response future |
//! | [`Fault::Abort`] | answers without calling the inner service | the response future |
//! | [`Fault::Hang`] | never answers (until the experiment ends) | the response future |
//! | [`Fault::Unavailable`] | `poll_ready` is `Pending` for a while | `poll_ready` |
//! | [`Fault::Throttle`] | streams the response body at a rate | the response body ([`HttpChaos`](crate::HttpChaos)) |
//! | [`Fault::Truncate`] | ends the response body early | the response body ([`HttpChaos`](crate::HttpChaos)) |
//!
//! Latency and abort follow Envoy's fault injection filter
//! (`envoy.filters.http.fault`): a delay happens before the request reaches
//! the inner service, and an abort answers in its place. `Throttle` and
//! `Truncate` follow Toxiproxy's `bandwidth` and `limit_data` toxics: the
//! body's bytes are released at most `bytes_per_second`, or the body ends
//! cleanly after `after_bytes` bytes, as a connection that closed early
//! would end it.
//!
//! # Latency distributions
//!
//! - [`Latency::Fixed`]: always the same delay.
//! - [`Latency::Uniform`]: uniform between `min` and `max`.
//! - [`Latency::LogNormal`]: the shape of real service latencies, given by
//!   its median and 99th percentile: `exp(μ + σ·Z)` with `μ = ln(median)`,
//!   `σ = ln(p99 / median) / 2.3263` (the standard normal's 99th
//!   percentile), and `Z` standard normal, drawn with the Box–Muller
//!   transform (`Z = √(−2 ln U₁) · cos(2π U₂)`). An optional `max` caps
//!   the long tail.
//!
//! # Percentages
//!
//! Each fault fires on a percentage of the requests its experiment targets,
//! drawn independently per fault and per request. The percentage is kept in
//! parts per million, so the finest is `0.0001` (one request in a million);
//! a positive percentage finer than that is an error rather than silently
//! zero.

use std::fmt;
use std::time::Duration;

use rand::Rng;

/// The `type` names of the faults, as written in an experiment.
pub(crate) const FAULT_TYPES: [&str; 6] = [
    "latency",
    "abort",
    "hang",
    "unavailable",
    "throttle",
    "truncate",
];

/// The standard normal's 99th percentile.
const Z99: f64 = 2.326_347_874_040_841;

/// One fault.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Fault {
    /// Delay the request before it reaches the inner service.
    Latency(Latency),
    /// Answer in the inner service's place.
    Abort(Abort),
    /// Never answer, until the caller gives up (a timeout) or the
    /// experiment ends, when the request goes on to the inner service.
    Hang,
    /// Make `poll_ready` return `Pending` for this long, then wake the
    /// task. Acts before any request exists, so its experiment's target may
    /// only name endpoint locality and labels.
    Unavailable(Duration),
    /// Release the response body's bytes at most this many per second.
    Throttle {
        /// The rate, at least 1.
        bytes_per_second: u64,
    },
    /// End the response body after this many bytes.
    Truncate {
        /// Bytes let through.
        after_bytes: u64,
    },
}

impl Fault {
    /// The fault's `type` in an experiment document.
    pub fn type_name(&self) -> &'static str {
        match self {
            Fault::Latency(_) => "latency",
            Fault::Abort(_) => "abort",
            Fault::Hang => "hang",
            Fault::Unavailable(_) => "unavailable",
            Fault::Throttle { .. } => "throttle",
            Fault::Truncate { .. } => "truncate",
        }
    }

    /// Whether the fault acts on the response body.
    pub(crate) fn is_body(&self) -> bool {
        matches!(self, Fault::Throttle { .. } | Fault::Truncate { .. })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: &Duration| humantime::format_duration(*d).to_string();
        match self {
            Fault::Latency(Latency::Fixed(x)) => write!(f, "latency {}", d(x)),
            Fault::Latency(Latency::Uniform { min, max }) => {
                write!(f, "latency {}..{}", d(min), d(max))
            }
            Fault::Latency(Latency::LogNormal { median, p99, .. }) => {
                write!(f, "latency median {} p99 {}", d(median), d(p99))
            }
            Fault::Abort(Abort::Error) => f.write_str("abort"),
            Fault::Abort(Abort::Http(s)) => write!(f, "abort {s}"),
            Fault::Abort(Abort::Grpc(s)) => write!(f, "abort grpc {s}"),
            Fault::Hang => f.write_str("hang"),
            Fault::Unavailable(x) => write!(f, "unavailable {}", d(x)),
            Fault::Throttle { bytes_per_second } => write!(f, "throttle {bytes_per_second} B/s"),
            Fault::Truncate { after_bytes } => write!(f, "truncate after {after_bytes} B"),
        }
    }
}

/// A delay's distribution; see the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Latency {
    /// Always this delay (more than zero).
    Fixed(Duration),
    /// Uniform in `[min, max]`, `min <= max`, `max` more than zero.
    Uniform {
        /// The shortest delay.
        min: Duration,
        /// The longest delay.
        max: Duration,
    },
    /// Log-normal with this median and 99th percentile (`median > 0`,
    /// `p99 >= median`), capped at `max` if given (`max >= median`).
    LogNormal {
        /// The median delay.
        median: Duration,
        /// The 99th-percentile delay.
        p99: Duration,
        /// The longest delay drawn.
        max: Option<Duration>,
    },
}

impl Latency {
    /// A fixed delay.
    pub const fn fixed(delay: Duration) -> Self {
        Latency::Fixed(delay)
    }

    /// A delay uniform in `[min, max]`.
    pub const fn uniform(min: Duration, max: Duration) -> Self {
        Latency::Uniform { min, max }
    }

    /// A log-normal delay with this median and 99th percentile, uncapped.
    pub const fn log_normal(median: Duration, p99: Duration) -> Self {
        Latency::LogNormal {
            median,
            p99,
            max: None,
        }
    }

    /// Draws one delay.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => {
                if min >= max {
                    return min;
                }
                let span = (max - min).as_nanos().min(u64::MAX as u128) as u64;
                min + Duration::from_nanos(rng.random_range(0..=span))
            }
            Latency::LogNormal { median, p99, max } => {
                let m = median.as_secs_f64();
                let sigma = (p99.as_secs_f64() / m).ln() / Z99;
                let secs = m * (sigma * standard_normal(rng)).exp();
                let cap = max.unwrap_or(Duration::MAX).as_secs_f64();
                Duration::try_from_secs_f64(secs.min(cap)).unwrap_or(Duration::MAX)
            }
        }
    }
}

/// A standard normal variate by the Box–Muller transform.
pub(crate) fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    // U₁ in (0, 1] keeps the logarithm finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// What an abort answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Abort {
    /// The error [`error::Injected`](crate::error::Injected).
    Error,
    /// An HTTP response with this status (`200..=599`). A service that is
    /// not an HTTP service gets an `Injected` error carrying the status.
    Http(u16),
    /// A gRPC trailers-only response with this `grpc-status` (`1..=16`):
    /// HTTP 200, `content-type: application/grpc`, the status in the
    /// headers, no body, as gRPC servers answer a call they reject.
    Grpc(u16),
}

/// A percentage with a resolution of one part per million.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(u32);

/// One million parts.
pub(crate) const MILLION: u32 = 1_000_000;

impl Percent {
    /// Every request.
    pub const ALL: Percent = Percent(MILLION);

    /// A percentage in `[0, 100]`, rounded to the nearest part per million.
    ///
    /// # Errors
    ///
    /// A message when `percent` is outside `[0, 100]`, not a number, or
    /// positive but below one part per million (`0.0001`).
    pub fn new(percent: f64) -> Result<Percent, String> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(format!("must be a percentage in [0, 100], got {percent}"));
        }
        let ppm = (percent * 10_000.0).round() as u32;
        if ppm == 0 && percent > 0.0 {
            return Err(format!(
                "{percent} is finer than one in a million (0.0001), the finest percentage"
            ));
        }
        Ok(Percent(ppm))
    }

    /// A percentage in parts per million, capped at a million.
    pub const fn from_ppm(ppm: u32) -> Percent {
        if ppm > MILLION {
            Percent(MILLION)
        } else {
            Percent(ppm)
        }
    }

    /// Parts per million.
    pub const fn ppm(self) -> u32 {
        self.0
    }

    /// As a percentage.
    pub fn as_percent(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }

    /// Draws whether this request is hit.
    #[inline]
    pub(crate) fn roll<R: Rng + ?Sized>(self, rng: &mut R) -> bool {
        match self.0 {
            0 => false,
            MILLION => true,
            p => rng.random_range(0..MILLION) < p,
        }
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.as_percent())
    }
}

/// A fault and the percentage of targeted requests it hits.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FaultSpec {
    /// The fault.
    pub fault: Fault,
    /// How often it fires.
    pub percent: Percent,
}

impl FaultSpec {
    /// `fault` on `percent` of the targeted requests.
    pub fn new(fault: Fault, percent: Percent) -> Self {
        FaultSpec { fault, percent }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn percent_resolution_is_one_in_a_million() {
        assert_eq!(Percent::new(0.0001).unwrap().ppm(), 1);
        assert_eq!(Percent::new(100.0).unwrap(), Percent::ALL);
        assert_eq!(Percent::new(12.5).unwrap().ppm(), 125_000);
        assert!(Percent::new(0.00001).is_err());
        assert!(Percent::new(100.1).is_err());
        assert!(Percent::new(f64::NAN).is_err());
        assert_eq!(Percent::new(0.0).unwrap().ppm(), 0);
    }

    #[test]
    fn a_few_parts_per_million_fire_that_often() {
        let mut rng = SmallRng::seed_from_u64(5);
        let p = Percent::new(0.0003).unwrap();
        assert_eq!(p.ppm(), 3);
        let hits = (0..10_000_000).filter(|_| p.roll(&mut rng)).count();
        // Binomial(10M, 3e-6): mean 30, σ ≈ 5.5.
        assert!((8..=52).contains(&hits), "{hits} hits");
    }

    #[test]
    fn standard_normal_has_zero_mean_and_unit_variance() {
        let mut rng = SmallRng::seed_from_u64(7);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| standard_normal(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        let above = xs.iter().filter(|x| **x > Z99).count() as f64 / n as f64;
        assert!((above - 0.01).abs() < 0.001, "share above z99 {above}");
    }

    #[test]
    fn log_normal_hits_its_median_and_p99() {
        let mut rng = SmallRng::seed_from_u64(11);
        let l = Latency::log_normal(Duration::from_millis(10), Duration::from_millis(30));
        let mut xs: Vec<Duration> = (0..100_000).map(|_| l.sample(&mut rng)).collect();
        xs.sort();
        let median = xs[50_000].as_secs_f64() * 1e3;
        let p99 = xs[99_000].as_secs_f64() * 1e3;
        assert!((median - 10.0).abs() < 0.3, "median {median} ms");
        assert!((p99 - 30.0).abs() < 1.5, "p99 {p99} ms");
    }

    #[test]
    fn log_normal_max_caps_the_tail() {
        let mut rng = SmallRng::seed_from_u64(3);
        let l = Latency::LogNormal {
            median: Duration::from_millis(10),
            p99: Duration::from_millis(100),
            max: Some(Duration::from_millis(50)),
        };
        assert!((0..10_000).all(|_| l.sample(&mut rng) <= Duration::from_millis(50)));
    }
}
