//! [`Gradient2`]: a limit that follows the ratio of a long-term RTT average to
//! the current RTT.
//!
//! Netflix concurrency-limits' `Gradient2Limit`, its recommended server
//! default. Per sample (per window, under [`Windowed`](super::Windowed)):
//!
//! ```text
//! long     = EMA of rtt over `long_window` samples (plain average of the first 10)
//! if long / rtt > 2: long ×= 0.95          // recover quickly after a long overload
//! if in_flight < limit / 2: keep the limit  // app-limited
//! gradient = clamp(tolerance × long / rtt, 0.5, 1.0)
//! new      = limit × gradient + queue_size(limit)
//! limit    = clamp((1 − smoothing) × limit + smoothing × new, min_limit, max_limit)
//! ```
//!
//! While latency stays within `tolerance` of its long-term average the limit
//! grows by `smoothing × queue_size` per update; once the current RTT
//! exceeds it, the gradient pulls the limit down by at most half.
//!
//! `queue_size` is `max(4, √limit)` by default ([`QueueSize::Sqrt`], the
//! square-root headroom of Netflix's `GradientLimit`); Netflix's
//! `Gradient2Limit` builder uses a constant 4 ([`QueueSize::Fixed`]).
//!
//! Extension: Netflix's Gradient2 ignores drops; here a dropped sample
//! multiplies the limit by `backoff_ratio` (default 0.9) and leaves the RTT
//! average alone. `backoff_ratio = 1.0` ignores drops as Netflix does.

use watertight_core::config;

use super::{ExpAvg, LimitAlgorithm, Sample};
use crate::error::check::{self, COMPONENT};
use crate::error::ConfigError;

/// How much the limit may grow per update while latency is low.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)
)]
pub enum QueueSize {
    /// A constant (Netflix `Gradient2Limit`'s default is 4).
    Fixed {
        /// The headroom.
        size: u32,
    },
    /// `max(min, √limit)`: headroom that grows with the limit.
    Sqrt {
        /// The smallest headroom.
        min: u32,
    },
}

impl Default for QueueSize {
    fn default() -> Self {
        QueueSize::Sqrt { min: 4 }
    }
}

impl QueueSize {
    fn at(self, limit: f64) -> f64 {
        match self {
            QueueSize::Fixed { size } => f64::from(size),
            QueueSize::Sqrt { min } => limit.max(0.0).sqrt().floor().max(f64::from(min)),
        }
    }
}

/// The configuration of [`Gradient2`]; the defaults are Netflix's.
///
/// | field | default |
/// |---|---|
/// | `initial_limit` | 20 |
/// | `min_limit` | 20 |
/// | `max_limit` | 200 |
/// | `smoothing` | 0.2 |
/// | `tolerance` | 1.5 |
/// | `long_window` | 600 samples |
/// | `queue_size` | `max(4, √limit)` |
/// | `backoff_ratio` | 0.9 (1.0 ignores drops, as Netflix does) |
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct Gradient2Config {
    /// The limit to start with, in `min_limit..=max_limit`.
    pub initial_limit: u32,
    /// The limit never goes below this (at least 1).
    pub min_limit: u32,
    /// The limit never goes above this (at most `2^30`).
    pub max_limit: u32,
    /// The weight of a new estimate, in `(0, 1]`.
    pub smoothing: f64,
    /// How much slower than its long-term average the current RTT may be
    /// before the limit shrinks, in `[1, 100]`.
    pub tolerance: f64,
    /// Samples the long-term average spans, at least 1.
    pub long_window: u32,
    /// Growth per update while latency is within tolerance.
    pub queue_size: QueueSize,
    /// The factor applied on a drop, in `[0.5, 1.0]`.
    pub backoff_ratio: f64,
}

impl Default for Gradient2Config {
    fn default() -> Self {
        Gradient2Config {
            initial_limit: 20,
            min_limit: 20,
            max_limit: 200,
            smoothing: 0.2,
            tolerance: 1.5,
            long_window: 600,
            queue_size: QueueSize::default(),
            backoff_ratio: 0.9,
        }
    }
}

impl Gradient2Config {
    /// Checks every rule given on the fields.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that breaks a rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check::limits(self.min_limit, self.initial_limit, self.max_limit)?;
        config::fraction(COMPONENT, "smoothing", self.smoothing)?;
        config::within_range(COMPONENT, "tolerance", self.tolerance, 1.0, 100.0)?;
        check::at_least_one("long_window", self.long_window)?;
        config::within_range(COMPONENT, "backoff_ratio", self.backoff_ratio, 0.5, 1.0)
    }
}

/// Netflix's Gradient2; see the [module docs](self).
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use watertight_bulkhead::limit::{Gradient2, Gradient2Config, LimitAlgorithm, Sample};
///
/// let mut config = Gradient2Config::default();
/// config.min_limit = 1;
/// let mut g = Gradient2::new(config)?;
/// let (now, ms) = (Instant::now(), Duration::from_millis);
/// // Busy at steady latency: the limit grows.
/// for _ in 0..10 {
///     g.update(&Sample::new(now, ms(10), 40, false));
/// }
/// let grown = g.update(&Sample::new(now, ms(10), 40, false));
/// assert!(grown > 20);
/// // Four times the long-term latency, beyond the 1.5 tolerance: it shrinks.
/// assert!(g.update(&Sample::new(now, ms(40), 40, false)) < grown);
/// # Ok::<(), watertight_bulkhead::error::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Gradient2 {
    config: Gradient2Config,
    limit: f64,
    long_rtt: ExpAvg,
}

impl Default for Gradient2 {
    fn default() -> Self {
        Gradient2::new(Gradient2Config::default()).expect("the defaults are valid")
    }
}

impl Gradient2 {
    /// An algorithm with `config`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field; see
    /// [`Gradient2Config::validate`].
    pub fn new(config: Gradient2Config) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Gradient2 {
            limit: f64::from(config.initial_limit),
            long_rtt: ExpAvg::new(config.long_window, 10),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Gradient2Config {
        &self.config
    }

    /// The long-term RTT average, in seconds.
    pub fn long_rtt(&self) -> f64 {
        self.long_rtt.get()
    }

    /// The limit before truncation to an integer.
    pub fn estimate(&self) -> f64 {
        self.limit
    }
}

impl LimitAlgorithm for Gradient2 {
    fn initial_limit(&self) -> u32 {
        self.config.initial_limit
    }

    fn update(&mut self, s: &Sample) -> u32 {
        let c = &self.config;
        let (min, max) = (f64::from(c.min_limit), f64::from(c.max_limit));
        if s.dropped && c.backoff_ratio < 1.0 {
            self.limit = (self.limit * c.backoff_ratio).clamp(min, max);
            return self.limit as u32;
        }
        let queue = c.queue_size.at(self.limit);
        let short = s.rtt.as_secs_f64();
        let long = self.long_rtt.add(short);
        if short > 0.0 && long / short > 2.0 {
            self.long_rtt.scale(0.95);
        }
        if f64::from(s.in_flight) < self.limit / 2.0 {
            return self.limit as u32;
        }
        let gradient = if short > 0.0 {
            (c.tolerance * long / short).clamp(0.5, 1.0)
        } else {
            1.0
        };
        let new = self.limit * gradient + queue;
        self.limit = (self.limit * (1.0 - c.smoothing) + new * c.smoothing).clamp(min, max);
        self.limit as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::Instant;

    fn s(rtt_ms: u64, in_flight: u32) -> Sample {
        Sample::new(
            Instant::now(),
            Duration::from_millis(rtt_ms),
            in_flight,
            false,
        )
    }

    fn g(initial: u32, min: u32) -> Gradient2 {
        Gradient2::new(Gradient2Config {
            initial_limit: initial,
            min_limit: min,
            ..Gradient2Config::default()
        })
        .unwrap()
    }

    #[test]
    fn grows_by_smoothing_times_queue_size_at_steady_latency() {
        let mut a = g(100, 1);
        a.update(&s(10, 100));
        // queue size √100 = 10; 100 + 0.2 × 10 = 102.
        assert!((a.estimate() - 102.0).abs() < 1e-9, "{}", a.estimate());
    }

    #[test]
    fn shrinks_once_latency_passes_the_tolerance() {
        let mut a = g(100, 1);
        for _ in 0..10 {
            a.update(&s(10, 100));
        }
        let before = a.estimate();
        // The long average barely moves (≈ 10.07 ms); 30 ms is beyond 1.5 ×
        // long, so gradient = 1.5 × long / 30.
        a.update(&s(30, 200));
        let long = a.long_rtt();
        let gradient = 1.5 * long / 0.030;
        let queue = before.sqrt().floor();
        let expect = before * 0.8 + (before * gradient + queue) * 0.2;
        assert!(
            (a.estimate() - expect).abs() < 1e-9,
            "{} != {expect}",
            a.estimate()
        );
        assert!(a.estimate() < before);
    }

    #[test]
    fn gradient_is_at_least_one_half() {
        let mut a = g(100, 1);
        for _ in 0..10 {
            a.update(&s(10, 100));
        }
        let before = a.estimate();
        a.update(&s(10_000, 200));
        let expect = before * 0.8 + (before * 0.5 + before.sqrt().floor()) * 0.2;
        assert!((a.estimate() - expect).abs() < 1e-9);
    }

    #[test]
    fn app_limited_samples_keep_the_limit() {
        let mut a = g(100, 1);
        a.update(&s(10, 49));
        assert_eq!(a.estimate(), 100.0);
    }

    #[test]
    fn drops_back_off_unless_the_ratio_is_one() {
        let mut a = g(100, 1);
        let mut dropped = s(1, 100);
        dropped.dropped = true;
        assert_eq!(a.update(&dropped), 90);
        assert_eq!(a.long_rtt(), 0.0, "a drop's rtt never joins the average");

        let mut netflix = Gradient2::new(Gradient2Config {
            initial_limit: 100,
            min_limit: 1,
            backoff_ratio: 1.0,
            ..Gradient2Config::default()
        })
        .unwrap();
        assert_eq!(
            netflix.update(&dropped),
            102,
            "drops ignored, as Netflix does"
        );
    }

    #[test]
    fn fixed_queue_size_is_netflix_builder_default() {
        let mut a = Gradient2::new(Gradient2Config {
            initial_limit: 100,
            min_limit: 1,
            queue_size: QueueSize::Fixed { size: 4 },
            ..Gradient2Config::default()
        })
        .unwrap();
        a.update(&s(10, 100));
        assert!((a.estimate() - 100.8).abs() < 1e-9);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let bad = |f: fn(&mut Gradient2Config)| {
            let mut c = Gradient2Config::default();
            f(&mut c);
            Gradient2::new(c).unwrap_err().field().to_owned()
        };
        assert_eq!(bad(|c| c.tolerance = 0.9), "tolerance");
        assert_eq!(bad(|c| c.smoothing = 1.5), "smoothing");
        assert_eq!(bad(|c| c.long_window = 0), "long_window");
        assert_eq!(bad(|c| c.backoff_ratio = 0.2), "backoff_ratio");
        assert_eq!(bad(|c| c.initial_limit = 5), "initial_limit");
    }
}
