//! [`Windowed`]: one algorithm update per window of samples.
//!
//! Netflix concurrency-limits' `WindowedLimit`. Samples accumulate in a
//! window; when a sample completes after the window's end and the window
//! holds at least `min_samples` samples, the wrapped algorithm gets one
//! aggregate sample:
//!
//! - `rtt`: the average RTT of the window's samples that were not dropped,
//!   or their `percentile` if one is set (the average of the dropped ones
//!   when all were dropped);
//! - `in_flight`: the largest in-flight count of the window;
//! - `dropped`: whether any sample was dropped.
//!
//! The next window lasts twice the window's lowest RTT, kept within
//! `min_window..=max_window`, so a window always spans whole requests.
//! Successful samples faster than `min_rtt_threshold` (cache hits) are
//! ignored.
//!
//! Netflix closes the first window as soon as it holds enough samples; those
//! are the fastest of the requests in flight (they complete first), which
//! biases every baseline built on it low. Here the first window, like every
//! other, lasts `min_window` from its first sample.
//!
//! Netflix's windowed limit never closes a window without a successful
//! sample, so a service that only drops never lowers its limit; here such a
//! window is passed on as dropped.

use std::time::Duration;

use tokio::time::Instant;
use watertight_core::config;

use super::{percentile, LimitAlgorithm, Sample};
use crate::error::check::{self, COMPONENT};
use crate::error::ConfigError;

/// The configuration of [`Windowed`]; the defaults are Netflix's.
///
/// | field | default |
/// |---|---|
/// | `min_window` | 1 s |
/// | `max_window` | 1 s |
/// | `min_samples` | 10 |
/// | `percentile` | `None` (the average) |
/// | `min_rtt_threshold` | 100 µs |
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct WindowConfig {
    /// The shortest window; not zero.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub min_window: Duration,
    /// The longest window; at least `min_window`.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_window: Duration,
    /// Samples a window needs before it counts, at least 1.
    pub min_samples: u32,
    /// The percentile of a window's RTTs passed on, in `(0, 1]`; `None`
    /// passes the average.
    pub percentile: Option<f64>,
    /// Successful samples faster than this are ignored.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub min_rtt_threshold: Duration,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            min_window: Duration::from_secs(1),
            max_window: Duration::from_secs(1),
            min_samples: 10,
            percentile: None,
            min_rtt_threshold: Duration::from_micros(100),
        }
    }
}

impl WindowConfig {
    /// Checks every rule given on the fields.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that breaks a rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        config::non_zero(COMPONENT, "min_window", self.min_window)?;
        if self.max_window < self.min_window {
            return Err(check::invalid(
                "max_window",
                format!(
                    "must be at least `min_window` ({:?}), got {:?}",
                    self.min_window, self.max_window
                ),
            ));
        }
        check::at_least_one("min_samples", self.min_samples)?;
        if let Some(p) = self.percentile {
            config::fraction(COMPONENT, "percentile", p)?;
        }
        Ok(())
    }
}

/// Aggregates samples into windows for `A`; see the [module docs](self).
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use watertight_bulkhead::limit::{Aimd, LimitAlgorithm, Sample, WindowConfig, Windowed};
///
/// let mut aimd = Windowed::new(Aimd::default(), WindowConfig::default())?;
/// let t0 = Instant::now();
/// let ms = Duration::from_millis;
/// // Busy samples for a second: one window, one "+1".
/// for i in 0..100 {
///     assert_eq!(aimd.update(&Sample::new(t0 + ms(10 * i), ms(10), 20, false)), 20);
/// }
/// assert_eq!(aimd.update(&Sample::new(t0 + ms(1_001), ms(10), 20, false)), 21);
/// # Ok::<(), watertight_bulkhead::error::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Windowed<A> {
    inner: A,
    config: WindowConfig,
    limit: u32,
    next_update: Option<Instant>,
    /// Samples in the window.
    count: u32,
    /// Of those, the ones not dropped (fewer: the window holds a drop).
    kept: u32,
    sum: Duration,
    dropped_sum: Duration,
    min_rtt: Option<Duration>,
    max_in_flight: u32,
    rtts: Vec<Duration>,
}

impl<A: Default + LimitAlgorithm> Default for Windowed<A> {
    fn default() -> Self {
        Windowed::new(A::default(), WindowConfig::default()).expect("the defaults are valid")
    }
}

impl<A: LimitAlgorithm> Windowed<A> {
    /// Wraps `inner`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field; see
    /// [`WindowConfig::validate`].
    pub fn new(inner: A, config: WindowConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Windowed {
            limit: inner.initial_limit(),
            inner,
            config,
            next_update: None,
            count: 0,
            kept: 0,
            sum: Duration::ZERO,
            dropped_sum: Duration::ZERO,
            min_rtt: None,
            max_in_flight: 0,
            rtts: Vec::new(),
        })
    }
}

impl<A> Windowed<A> {
    /// The wrapped algorithm.
    pub fn get_ref(&self) -> &A {
        &self.inner
    }

    /// The configuration.
    pub fn config(&self) -> &WindowConfig {
        &self.config
    }

    fn aggregate(&mut self) -> Duration {
        if self.kept == 0 {
            return self.dropped_sum / self.count.max(1);
        }
        match self.config.percentile {
            Some(p) => percentile(&mut self.rtts, p).unwrap_or(Duration::ZERO),
            None => self.sum / self.kept,
        }
    }

    fn reset(&mut self) {
        self.count = 0;
        self.kept = 0;
        self.sum = Duration::ZERO;
        self.dropped_sum = Duration::ZERO;
        self.min_rtt = None;
        self.max_in_flight = 0;
        self.rtts.clear();
    }
}

impl<A: LimitAlgorithm> LimitAlgorithm for Windowed<A> {
    fn initial_limit(&self) -> u32 {
        self.inner.initial_limit()
    }

    fn update(&mut self, s: &Sample) -> u32 {
        // A drop counts however fast it came back (a fast 503 is the
        // point); only successful samples below the threshold are noise.
        if !s.dropped && s.rtt < self.config.min_rtt_threshold {
            return self.limit;
        }
        self.count += 1;
        self.max_in_flight = self.max_in_flight.max(s.in_flight);
        if s.dropped {
            self.dropped_sum += s.rtt;
        } else {
            self.kept += 1;
            self.sum += s.rtt;
            self.min_rtt = Some(self.min_rtt.map_or(s.rtt, |m| m.min(s.rtt)));
            if self.config.percentile.is_some() {
                self.rtts.push(s.rtt);
            }
        }
        let end = s.end();
        let next_update = *self
            .next_update
            .get_or_insert_with(|| end + self.config.min_window);
        if end <= next_update || self.count < self.config.min_samples {
            return self.limit;
        }
        let rtt = self.aggregate();
        let candidate = self.min_rtt.unwrap_or(rtt);
        let length = (candidate * 2).clamp(self.config.min_window, self.config.max_window);
        self.next_update = Some(end + length);
        let dropped = self.kept < self.count;
        let window = Sample::new(s.start, rtt, self.max_in_flight, dropped);
        self.reset();
        self.limit = self.inner.update(&window);
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::Arc;

    /// Records what it is fed.
    #[derive(Clone, Default)]
    struct Probe(Arc<Mutex<Vec<Sample>>>);

    impl LimitAlgorithm for Probe {
        fn initial_limit(&self) -> u32 {
            7
        }

        fn update(&mut self, s: &Sample) -> u32 {
            let mut v = self.0.lock();
            v.push(*s);
            7 + v.len() as u32
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn windowed(config: WindowConfig) -> (Windowed<Probe>, Probe) {
        let p = Probe::default();
        (Windowed::new(p.clone(), config).unwrap(), p)
    }

    #[test]
    fn passes_one_average_sample_per_window() {
        let (mut w, p) = windowed(WindowConfig::default());
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(w.update(&Sample::new(t0, ms(10 + i), i as u32, false)), 7);
        }
        // The first window lasts min_window (1 s) from its first sample.
        assert_eq!(w.update(&Sample::new(t0 + ms(991), ms(19), 30, false)), 7);
        assert_eq!(w.update(&Sample::new(t0 + ms(992), ms(19), 30, false)), 8);
        let s = p.0.lock()[0];
        assert_eq!(s.rtt, ms(145 + 19 + 19) / 12);
        assert_eq!(s.in_flight, 30);
        assert!(!s.dropped);
        // So does the next one, counted from the end of the sample that
        // closed this one, if it holds min_samples.
        for _ in 0..5 {
            w.update(&Sample::new(t0 + ms(2_100), ms(10), 1, false));
        }
        assert_eq!(p.0.lock().len(), 1, "too few samples");
        for _ in 0..5 {
            w.update(&Sample::new(t0 + ms(2_100), ms(10), 1, false));
        }
        assert_eq!(p.0.lock().len(), 2);
    }

    #[test]
    fn drops_mark_the_window_and_stay_out_of_the_rtt() {
        let (mut w, p) = windowed(WindowConfig {
            min_samples: 2,
            ..WindowConfig::default()
        });
        let t0 = Instant::now();
        w.update(&Sample::new(t0, ms(1), 5, true));
        w.update(&Sample::new(t0 + ms(990), ms(20), 5, false));
        let s = p.0.lock()[0];
        assert!(s.dropped);
        assert_eq!(s.rtt, ms(20));
    }

    #[test]
    fn a_window_of_only_drops_is_passed_on() {
        let (mut w, p) = windowed(WindowConfig {
            min_samples: 2,
            ..WindowConfig::default()
        });
        let t0 = Instant::now();
        w.update(&Sample::new(t0, ms(2), 5, true));
        w.update(&Sample::new(t0 + ms(1_000), ms(4), 6, true));
        let s = p.0.lock()[0];
        assert!(s.dropped);
        assert_eq!((s.rtt, s.in_flight), (ms(3), 6));
    }

    #[test]
    fn percentile_and_threshold() {
        let (mut w, p) = windowed(WindowConfig {
            min_samples: 4,
            percentile: Some(0.75),
            ..WindowConfig::default()
        });
        let t0 = Instant::now();
        w.update(&Sample::new(t0, Duration::from_micros(50), 1, false));
        for (i, rtt) in [40, 10, 30, 20].into_iter().enumerate() {
            w.update(&Sample::new(t0 + ms(1_000) * i as u32, ms(rtt), 1, false));
        }
        let s = p.0.lock()[0];
        assert_eq!(
            s.rtt,
            ms(30),
            "p75 of 10, 20, 30, 40; the 50 µs sample ignored"
        );
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let bad = |f: fn(&mut WindowConfig)| {
            let mut c = WindowConfig::default();
            f(&mut c);
            Windowed::new(Probe::default(), c)
                .err()
                .unwrap()
                .field()
                .to_owned()
        };
        assert_eq!(bad(|c| c.min_window = Duration::ZERO), "min_window");
        assert_eq!(bad(|c| c.max_window = ms(10)), "max_window");
        assert_eq!(bad(|c| c.min_samples = 0), "min_samples");
        assert_eq!(bad(|c| c.percentile = Some(0.0)), "percentile");
    }
}
