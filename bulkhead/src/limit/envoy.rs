//! [`EnvoyGradient`]: Envoy's adaptive concurrency gradient controller.
//!
//! The controller of Envoy's `adaptive_concurrency` HTTP filter. It keeps a
//! *minimum RTT*, measured from time to time with the limit pinned low, and
//! compares each interval's *sample RTT* (a percentile of the interval's
//! latencies) with it:
//!
//! ```text
//! gradient  = clamp((min_rtt + buffer × min_rtt) / sample_rtt, 0.5, 2.0)
//! limit'    = limit × gradient
//! new_limit = clamp(limit' + √limit', min_concurrency, max_limit)
//! ```
//!
//! so the limit roughly doubles per interval while latency is within
//! `buffer` of the minimum, and shrinks in proportion once it is not; `√`
//! is the burst headroom.
//!
//! **Minimum RTT measurement.** At the start, and every `min_rtt_interval`
//! plus a random jitter of up to `jitter × min_rtt_interval` after the last
//! measurement, the controller pins the limit to `min_concurrency` until
//! `request_count` requests admitted during the measurement have completed;
//! the `sample_percentile` of their latencies becomes the new minimum RTT,
//! and the limit returns to its value from before. Latencies of requests
//! admitted before a measurement began are discarded, as Envoy does: they
//! ran under the old limit. If five updates in a row leave the limit at
//! `min_concurrency`, the minimum RTT is measured again at once (it was
//! probably taken in a bad moment). A `fixed_min_rtt` skips measuring.
//!
//! Intervals are closed by the first sample after they end (Envoy uses a
//! timer); an interval without samples changes nothing.
//!
//! Extension: a dropped sample (an overload signal, which a server-side
//! filter never sees) makes the interval's update `backoff_ratio` (default
//! 0.9) times the lower of the limit and the in-flight count at which a
//! request was dropped, instead of the gradient; `backoff_ratio = 1.0`
//! ignores drops as Envoy does. Drops never join the latency samples.
//! Against a server that sheds, the gradient's multiplicative growth meets
//! this multiplicative decrease at the shed point: the limit oscillates
//! around the concurrency at which the server starts shedding.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;
use tokio::time::Instant;
use watertight_core::config;

use super::{percentile, LimitAlgorithm, Sample};
use crate::error::check::{self, COMPONENT};
use crate::error::ConfigError;

/// The configuration of [`EnvoyGradient`]; the defaults are Envoy's.
///
/// | field | default |
/// |---|---|
/// | `update_interval` (`concurrency_update_interval`) | 100 ms |
/// | `sample_percentile` (`sample_aggregate_percentile`) | 0.5 |
/// | `max_limit` (`max_concurrency_limit`) | 1000 |
/// | `min_rtt_interval` (`min_rtt_calc_params.interval`) | 60 s |
/// | `jitter` | 0.15 |
/// | `request_count` | 50 |
/// | `min_concurrency` | 3 |
/// | `buffer` | 0.25 |
/// | `fixed_min_rtt` (`fixed_value`) | `None` (measured) |
/// | `backoff_ratio` | 0.9 (1.0 ignores drops, as Envoy does) |
/// | `seed` | `None` (entropy) |
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct EnvoyGradientConfig {
    /// How often the limit is recomputed; not zero.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub update_interval: Duration,
    /// The percentile of an interval's latencies that is its sample RTT
    /// (and of a measurement's, the minimum RTT), in `(0, 1]`.
    pub sample_percentile: f64,
    /// The limit never goes above this (at most `2^30`, at least
    /// `min_concurrency`).
    pub max_limit: u32,
    /// Time between minimum-RTT measurements; not zero.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub min_rtt_interval: Duration,
    /// Random extra time between measurements, as a fraction of
    /// `min_rtt_interval`, in `[0, 1]`.
    pub jitter: f64,
    /// Requests a measurement takes, at least 1.
    pub request_count: u32,
    /// The limit while measuring, and its floor (at least 1).
    pub min_concurrency: u32,
    /// Latency above the minimum RTT that still counts as no queueing, as
    /// a fraction of it, in `[0, 10]`.
    pub buffer: f64,
    /// A fixed minimum RTT instead of measurements; not zero.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub fixed_min_rtt: Option<Duration>,
    /// The factor applied in an interval with drops, in `[0.5, 1.0]`.
    pub backoff_ratio: f64,
    /// Seed of the measurement jitter; `None` seeds from entropy.
    pub seed: Option<u64>,
}

impl Default for EnvoyGradientConfig {
    fn default() -> Self {
        EnvoyGradientConfig {
            update_interval: Duration::from_millis(100),
            sample_percentile: 0.5,
            max_limit: 1000,
            min_rtt_interval: Duration::from_secs(60),
            jitter: 0.15,
            request_count: 50,
            min_concurrency: 3,
            buffer: 0.25,
            fixed_min_rtt: None,
            backoff_ratio: 0.9,
            seed: None,
        }
    }
}

impl EnvoyGradientConfig {
    /// Checks every rule given on the fields.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that breaks a rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        config::non_zero(COMPONENT, "update_interval", self.update_interval)?;
        config::fraction(COMPONENT, "sample_percentile", self.sample_percentile)?;
        check::limit("min_concurrency", self.min_concurrency)?;
        check::limit("max_limit", self.max_limit)?;
        if self.max_limit < self.min_concurrency {
            return Err(check::invalid(
                "max_limit",
                format!(
                    "must be at least `min_concurrency` ({}), got {}",
                    self.min_concurrency, self.max_limit
                ),
            ));
        }
        config::non_zero(COMPONENT, "min_rtt_interval", self.min_rtt_interval)?;
        config::within_range(COMPONENT, "jitter", self.jitter, 0.0, 1.0)?;
        check::at_least_one("request_count", self.request_count)?;
        config::within_range(COMPONENT, "buffer", self.buffer, 0.0, 10.0)?;
        if let Some(d) = self.fixed_min_rtt {
            config::non_zero(COMPONENT, "fixed_min_rtt", d)?;
        }
        config::within_range(COMPONENT, "backoff_ratio", self.backoff_ratio, 0.5, 1.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Pinned to `min_concurrency`; `deferred` is the limit to return to.
    Measuring { deferred: u32 },
    Normal {
        /// When the current interval ends (set by its first sample).
        interval_end: Option<Instant>,
        /// When the next measurement starts (`None`: never, or at the first
        /// sample after a fixed minimum).
        next_measurement: Option<Instant>,
    },
}

/// Envoy's gradient controller; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct EnvoyGradient {
    config: EnvoyGradientConfig,
    limit: u32,
    min_rtt: Option<Duration>,
    phase: Phase,
    /// Samples of requests admitted before this instant are discarded.
    epoch: Option<Instant>,
    samples: Vec<Duration>,
    /// The lowest in-flight count at which a request of this interval was
    /// dropped, if one was.
    drop_in_flight: Option<u32>,
    at_min_in_a_row: u32,
    measurements: u64,
    rng: SmallRng,
}

impl Default for EnvoyGradient {
    fn default() -> Self {
        EnvoyGradient::new(EnvoyGradientConfig::default()).expect("the defaults are valid")
    }
}

impl EnvoyGradient {
    /// A controller with `config`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field; see
    /// [`EnvoyGradientConfig::validate`].
    pub fn new(config: EnvoyGradientConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let phase = match config.fixed_min_rtt {
            Some(_) => Phase::Normal {
                interval_end: None,
                next_measurement: None,
            },
            None => Phase::Measuring {
                deferred: config.min_concurrency,
            },
        };
        Ok(EnvoyGradient {
            limit: config.min_concurrency,
            min_rtt: config.fixed_min_rtt,
            phase,
            epoch: None,
            samples: Vec::with_capacity(config.request_count as usize),
            drop_in_flight: None,
            at_min_in_a_row: 0,
            measurements: 0,
            rng: super::rng(config.seed),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EnvoyGradientConfig {
        &self.config
    }

    /// The minimum RTT, once measured (or fixed).
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// Whether a minimum-RTT measurement is under way (the limit is pinned
    /// to `min_concurrency`).
    pub fn is_measuring(&self) -> bool {
        matches!(self.phase, Phase::Measuring { .. })
    }

    /// Minimum-RTT measurements completed.
    pub fn measurements(&self) -> u64 {
        self.measurements
    }

    fn jittered(&mut self, interval: Duration) -> Duration {
        let range_ms = (interval.as_millis() as f64 * self.config.jitter).ceil() as u64;
        if range_ms == 0 {
            return interval;
        }
        interval + Duration::from_millis(self.rng.random_range(0..range_ms))
    }

    fn start_measuring(&mut self, now: Instant) {
        self.phase = Phase::Measuring {
            deferred: self.limit,
        };
        self.limit = self.config.min_concurrency;
        self.epoch = Some(now);
        self.clear_interval();
        self.at_min_in_a_row = 0;
    }

    /// Forgets the samples and drops of the interval that ended.
    fn clear_interval(&mut self) {
        self.samples.clear();
        self.drop_in_flight = None;
    }

    fn finish_measuring(&mut self, deferred: u32, now: Instant) {
        let p = self.config.sample_percentile;
        self.min_rtt = percentile(&mut self.samples, p);
        self.samples.clear();
        self.measurements += 1;
        self.limit = deferred.max(self.config.min_concurrency);
        let next = self.jittered(self.config.min_rtt_interval);
        self.phase = Phase::Normal {
            interval_end: Some(now + self.config.update_interval),
            next_measurement: Some(now + next),
        };
    }

    fn gradient_limit(&mut self) -> Option<u32> {
        let c = &self.config;
        if let Some(dropped_at) = self.drop_in_flight.filter(|_| c.backoff_ratio < 1.0) {
            let from = self.limit.min(dropped_at);
            let backed_off = (f64::from(from) * c.backoff_ratio) as u32;
            return Some(backed_off.clamp(c.min_concurrency, c.max_limit));
        }
        let min_rtt = self.min_rtt?.as_secs_f64();
        let sample = percentile(&mut self.samples, c.sample_percentile)?.as_secs_f64();
        let buffered = min_rtt + min_rtt * c.buffer;
        let gradient = if sample > 0.0 {
            (buffered / sample).clamp(0.5, 2.0)
        } else {
            2.0
        };
        let limit = f64::from(self.limit) * gradient;
        let new = (limit + limit.sqrt()) as u32;
        Some(new.clamp(c.min_concurrency, c.max_limit))
    }
}

impl LimitAlgorithm for EnvoyGradient {
    fn initial_limit(&self) -> u32 {
        self.config.min_concurrency
    }

    fn update(&mut self, s: &Sample) -> u32 {
        if self.epoch.is_some_and(|e| s.start < e) {
            return self.limit;
        }
        let now = s.end();
        match self.phase {
            Phase::Measuring { deferred } => {
                if !s.dropped {
                    self.samples.push(s.rtt);
                }
                if self.samples.len() >= self.config.request_count as usize {
                    self.finish_measuring(deferred, now);
                }
            }
            Phase::Normal {
                interval_end,
                next_measurement,
            } => {
                if next_measurement.is_some_and(|t| now >= t) {
                    self.start_measuring(now);
                    return self.limit;
                }
                if s.dropped {
                    self.drop_in_flight = Some(
                        self.drop_in_flight
                            .map_or(s.in_flight, |d| d.min(s.in_flight)),
                    );
                } else {
                    self.samples.push(s.rtt);
                }
                let Some(end) = interval_end else {
                    self.phase = Phase::Normal {
                        interval_end: Some(now + self.config.update_interval),
                        next_measurement,
                    };
                    return self.limit;
                };
                if now < end {
                    return self.limit;
                }
                self.phase = Phase::Normal {
                    interval_end: Some(now + self.config.update_interval),
                    next_measurement,
                };
                let Some(new) = self.gradient_limit() else {
                    return self.limit;
                };
                self.clear_interval();
                let min = self.config.min_concurrency;
                if self.limit == min && new == min {
                    self.at_min_in_a_row += 1;
                } else {
                    self.at_min_in_a_row = 0;
                }
                self.limit = new;
                if self.at_min_in_a_row >= 5 && self.config.fixed_min_rtt.is_none() {
                    self.start_measuring(now);
                }
            }
        }
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn controller(config: EnvoyGradientConfig) -> EnvoyGradient {
        EnvoyGradient::new(config).unwrap()
    }

    /// Feeds `n` samples of `rtt` completing at `t`, admitted `rtt` before.
    fn feed(c: &mut EnvoyGradient, t: Instant, rtt: Duration, n: u32) -> u32 {
        let mut limit = c.limit;
        for _ in 0..n {
            limit = c.update(&Sample::new(t - rtt, rtt, limit, false));
        }
        limit
    }

    #[test]
    fn measures_min_rtt_pinned_to_min_concurrency_then_restores() {
        let t0 = Instant::now();
        let mut c = controller(EnvoyGradientConfig {
            seed: Some(1),
            ..EnvoyGradientConfig::default()
        });
        assert_eq!(c.initial_limit(), 3);
        assert!(c.is_measuring());
        assert_eq!(feed(&mut c, t0 + ms(100), ms(10), 49), 3);
        assert!(c.is_measuring());
        assert_eq!(feed(&mut c, t0 + ms(100), ms(10), 1), 3);
        assert!(!c.is_measuring());
        assert_eq!(c.min_rtt(), Some(ms(10)));
    }

    #[test]
    fn limit_follows_the_gradient_with_sqrt_headroom() {
        let t0 = Instant::now();
        let mut c = controller(EnvoyGradientConfig {
            fixed_min_rtt: Some(ms(10)),
            ..EnvoyGradientConfig::default()
        });
        // The first sample opens the interval; the first after its end
        // closes it. 10 ms × 1.25 / 10 ms → gradient 1.25: 3 × 1.25 = 3.75,
        // + √3.75 = 5.68 → 5.
        feed(&mut c, t0, ms(10), 1);
        assert_eq!(feed(&mut c, t0 + ms(100), ms(10), 1), 5);
        // Latency far above the buffered minimum: gradient 0.5 at most.
        c.limit = 100;
        feed(&mut c, t0 + ms(150), ms(40), 3);
        // 100 × 0.5 = 50, + √50 = 57.07 → 57.
        assert_eq!(feed(&mut c, t0 + ms(200), ms(40), 1), 57);
        // Low latency: gradient 2.0 at most: 57 × 2 + √114 = 124.7 → 124.
        feed(&mut c, t0 + ms(250), ms(1), 3);
        assert_eq!(feed(&mut c, t0 + ms(300), ms(1), 1), 124);
    }

    #[test]
    fn remeasures_after_the_interval_plus_jitter() {
        let t0 = Instant::now();
        let interval = Duration::from_secs(60);
        let mut c = controller(EnvoyGradientConfig {
            seed: Some(3),
            ..EnvoyGradientConfig::default()
        });
        feed(&mut c, t0 + ms(10), ms(10), 50);
        assert_eq!(c.measurements(), 1);
        // Grow the limit a while, then find when the pin comes back.
        let mut t = t0 + ms(10);
        let mut pinned_at = None;
        let mut before_pin = 0;
        while t < t0 + interval * 2 {
            t += ms(50);
            let before = c.limit;
            let limit = feed(&mut c, t, ms(10), 1);
            if c.is_measuring() {
                assert_eq!(limit, 3, "pinned to min_concurrency while measuring");
                pinned_at = Some(t);
                before_pin = before;
                break;
            }
        }
        let pinned_at = pinned_at.expect("measured again");
        let after = pinned_at - (t0 + ms(10));
        assert!(after >= interval, "{after:?}");
        assert!(after < interval.mul_f64(1.15) + ms(50), "{after:?}");
        // Requests admitted before the measurement began are discarded.
        c.update(&Sample::new(pinned_at - ms(20), ms(30), 3, false));
        assert!(c.samples.is_empty());
        // 50 new samples end it and restore the limit from before.
        feed(&mut c, pinned_at + ms(20), ms(10), 50);
        assert!(!c.is_measuring());
        assert_eq!(c.limit, before_pin);
        assert_eq!(c.measurements(), 2);
    }

    #[test]
    fn five_updates_at_the_minimum_trigger_a_new_measurement() {
        let t0 = Instant::now();
        let mut c = controller(EnvoyGradientConfig {
            seed: Some(1),
            ..EnvoyGradientConfig::default()
        });
        feed(&mut c, t0 + ms(10), ms(1), 50);
        let mut t = t0 + ms(10);
        // Every interval now sees a latency far above 1 ms.
        for _ in 0..40 {
            t += ms(101);
            feed(&mut c, t, ms(50), 1);
            if c.is_measuring() {
                break;
            }
        }
        assert!(c.is_measuring());
        assert_eq!(c.measurements(), 1);
    }

    #[test]
    fn drops_back_off_the_interval() {
        let t0 = Instant::now();
        let mut c = controller(EnvoyGradientConfig {
            fixed_min_rtt: Some(ms(10)),
            ..EnvoyGradientConfig::default()
        });
        c.limit = 100;
        feed(&mut c, t0, ms(10), 1);
        c.update(&Sample::new(t0 + ms(90), ms(1), 100, true));
        assert_eq!(feed(&mut c, t0 + ms(100), ms(10), 1), 90);
        // A drop at 60 in flight says the server sheds beyond 60: back off
        // from there, not from a limit it never reached.
        feed(&mut c, t0 + ms(150), ms(10), 1);
        c.update(&Sample::new(t0 + ms(190), ms(1), 60, true));
        assert_eq!(feed(&mut c, t0 + ms(200), ms(10), 1), 54);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let bad = |f: fn(&mut EnvoyGradientConfig)| {
            let mut c = EnvoyGradientConfig::default();
            f(&mut c);
            EnvoyGradient::new(c).unwrap_err().field().to_owned()
        };
        assert_eq!(
            bad(|c| c.update_interval = Duration::ZERO),
            "update_interval"
        );
        assert_eq!(bad(|c| c.sample_percentile = 0.0), "sample_percentile");
        assert_eq!(bad(|c| c.max_limit = 2), "max_limit");
        assert_eq!(bad(|c| c.jitter = 1.5), "jitter");
        assert_eq!(bad(|c| c.request_count = 0), "request_count");
        assert_eq!(bad(|c| c.buffer = -0.1), "buffer");
        assert_eq!(
            bad(|c| c.fixed_min_rtt = Some(Duration::ZERO)),
            "fixed_min_rtt"
        );
        assert_eq!(bad(|c| c.min_concurrency = 0), "min_concurrency");
    }
}
