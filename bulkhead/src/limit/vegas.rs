//! [`Vegas`]: a limit from the queue estimated out of RTT, as TCP Vegas sets
//! its congestion window.
//!
//! Netflix concurrency-limits' `VegasLimit`. With `rtt_noload` the lowest
//! RTT seen (the service with nothing queued), the requests queued at the
//! service are estimated as
//!
//! ```text
//! queue = ceil(limit × (1 − rtt_noload / rtt))
//! ```
//!
//! and, in units of `L = max(1, ⌊log10(limit)⌋)` (so the steps grow slowly
//! with the limit), with `alpha = 3·L`, `beta = 6·L`, `threshold = L`:
//!
//! - a drop: `limit − L`;
//! - in flight under half the limit (the service is idle): no change;
//! - `queue <= threshold`: `limit + beta` (nothing queues: grow fast);
//! - `queue < alpha`: `limit + L`;
//! - `queue > beta`: `limit − L`;
//! - otherwise (between alpha and beta) no change;
//!
//! smoothed as `(1 − smoothing)·limit + smoothing·new`. Every
//! `probe_multiplier × limit × U[0.5, 1)` samples, `rtt_noload` is reset to
//! the current RTT, so it follows a service that became slower for good.
//! Dropped samples neither probe nor lower `rtt_noload`: their RTT (a fast
//! rejection, a timeout) is not the service's.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;
use watertight_core::config;

use super::{LimitAlgorithm, Sample};
use crate::error::check::{self, COMPONENT};
use crate::error::ConfigError;

/// The configuration of [`Vegas`]; the defaults are Netflix's.
///
/// | field | default |
/// |---|---|
/// | `initial_limit` | 20 |
/// | `min_limit` | 1 |
/// | `max_limit` | 1000 |
/// | `smoothing` | 1.0 |
/// | `alpha` | 3 (× `L`) |
/// | `beta` | 6 (× `L`) |
/// | `probe_multiplier` | 30 |
/// | `seed` | `None` (entropy) |
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct VegasConfig {
    /// The limit to start with, in `min_limit..=max_limit`.
    pub initial_limit: u32,
    /// The limit never goes below this (at least 1).
    pub min_limit: u32,
    /// The limit never goes above this (at most `2^30`).
    pub max_limit: u32,
    /// The weight of a new estimate, in `(0, 1]`.
    pub smoothing: f64,
    /// Queueing (in `L` units) under which the limit grows, at least 1.
    pub alpha: u32,
    /// Queueing (in `L` units) over which the limit shrinks, at least
    /// `alpha`.
    pub beta: u32,
    /// `rtt_noload` is re-probed every `probe_multiplier × limit` samples
    /// (jittered), at least 1.
    pub probe_multiplier: u32,
    /// Seed of the probe jitter; `None` seeds from entropy.
    pub seed: Option<u64>,
}

impl Default for VegasConfig {
    fn default() -> Self {
        VegasConfig {
            initial_limit: 20,
            min_limit: 1,
            max_limit: 1000,
            smoothing: 1.0,
            alpha: 3,
            beta: 6,
            probe_multiplier: 30,
            seed: None,
        }
    }
}

impl VegasConfig {
    /// Checks every rule given on the fields.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that breaks a rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check::limits(self.min_limit, self.initial_limit, self.max_limit)?;
        config::fraction(COMPONENT, "smoothing", self.smoothing)?;
        check::at_least_one("alpha", self.alpha)?;
        if self.beta < self.alpha {
            return Err(check::invalid(
                "beta",
                format!(
                    "must be at least `alpha` ({}), got {}",
                    self.alpha, self.beta
                ),
            ));
        }
        check::at_least_one("probe_multiplier", self.probe_multiplier)?;
        Ok(())
    }
}

/// `max(1, ⌊log10(n)⌋)`: Netflix's `Log10RootFunction`.
fn log10_root(n: f64) -> f64 {
    if n < 1.0 {
        1.0
    } else {
        n.log10().floor().max(1.0)
    }
}

/// TCP Vegas for concurrency; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Vegas {
    config: VegasConfig,
    limit: f64,
    rtt_noload: Option<Duration>,
    probe_count: u64,
    probe_jitter: f64,
    rng: SmallRng,
}

impl Default for Vegas {
    fn default() -> Self {
        Vegas::new(VegasConfig::default()).expect("the defaults are valid")
    }
}

impl Vegas {
    /// An algorithm with `config`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field; see
    /// [`VegasConfig::validate`].
    pub fn new(config: VegasConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut rng = super::rng(config.seed);
        Ok(Vegas {
            limit: f64::from(config.initial_limit),
            rtt_noload: None,
            probe_count: 0,
            probe_jitter: rng.random_range(0.5..1.0),
            rng,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VegasConfig {
        &self.config
    }

    /// The lowest RTT seen since the last probe.
    pub fn rtt_noload(&self) -> Option<Duration> {
        self.rtt_noload
    }

    fn current(&self) -> u32 {
        self.limit as u32
    }
}

impl LimitAlgorithm for Vegas {
    fn initial_limit(&self) -> u32 {
        self.config.initial_limit
    }

    fn update(&mut self, s: &Sample) -> u32 {
        let c = &self.config;
        self.probe_count += 1;
        if !s.dropped {
            let probe_at = self.probe_jitter * f64::from(c.probe_multiplier) * self.limit;
            if probe_at <= self.probe_count as f64 {
                self.probe_jitter = self.rng.random_range(0.5..1.0);
                self.probe_count = 0;
                self.rtt_noload = Some(s.rtt);
                return self.current();
            }
            match self.rtt_noload {
                Some(n) if s.rtt >= n => {}
                _ => {
                    self.rtt_noload = Some(s.rtt);
                    return self.current();
                }
            }
        }

        let l = log10_root(self.limit);
        let new = if s.dropped {
            self.limit - l
        } else if f64::from(s.in_flight) * 2.0 < self.limit {
            return self.current();
        } else {
            let noload = self.rtt_noload.expect("set above").as_secs_f64();
            let rtt = s.rtt.as_secs_f64();
            let queue = if rtt > 0.0 {
                (self.limit * (1.0 - noload / rtt)).ceil()
            } else {
                0.0
            };
            let (alpha, beta) = (f64::from(c.alpha) * l, f64::from(c.beta) * l);
            if queue <= l {
                self.limit + beta
            } else if queue < alpha {
                self.limit + l
            } else if queue > beta {
                self.limit - l
            } else {
                return self.current();
            }
        };
        let new = new.clamp(f64::from(c.min_limit), f64::from(c.max_limit));
        self.limit = (1.0 - c.smoothing) * self.limit + c.smoothing * new;
        self.current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn vegas(initial: u32) -> Vegas {
        Vegas::new(VegasConfig {
            initial_limit: initial,
            // Never probe within these tests.
            probe_multiplier: 1_000_000,
            seed: Some(1),
            ..VegasConfig::default()
        })
        .unwrap()
    }

    fn s(rtt_ms: u64, in_flight: u32) -> Sample {
        Sample::new(
            Instant::now(),
            Duration::from_millis(rtt_ms),
            in_flight,
            false,
        )
    }

    #[test]
    fn log10_root_is_at_least_one() {
        assert_eq!(log10_root(5.0), 1.0);
        assert_eq!(log10_root(99.0), 1.0);
        assert_eq!(log10_root(100.0), 2.0);
        assert_eq!(log10_root(999.0), 2.0);
        assert_eq!(log10_root(1000.0), 3.0);
    }

    #[test]
    fn grows_by_beta_while_nothing_queues() {
        let mut v = vegas(20);
        assert_eq!(v.update(&s(100, 20)), 20, "first sample sets rtt_noload");
        assert_eq!(v.rtt_noload(), Some(Duration::from_millis(100)));
        assert_eq!(
            v.update(&s(100, 20)),
            26,
            "queue 0 <= threshold 1: + beta 6"
        );
    }

    #[test]
    fn holds_between_alpha_and_beta_and_shrinks_beyond() {
        let mut v = vegas(40);
        v.update(&s(100, 40));
        // queue = ceil(40 × (1 − 100/111)) = 4: between alpha 3 and beta 6.
        assert_eq!(v.update(&s(111, 40)), 40);
        // queue = ceil(40 × (1 − 100/120)) = 7 > beta: − 1.
        assert_eq!(v.update(&s(120, 40)), 39);
        // queue = ceil(39 × (1 − 100/105)) = 2, under alpha: + 1.
        assert_eq!(v.update(&s(105, 39)), 40);
    }

    #[test]
    fn idle_service_keeps_the_limit_and_drops_shrink_it() {
        let mut v = vegas(40);
        v.update(&s(100, 40));
        assert_eq!(v.update(&s(100, 19)), 40, "in flight under half the limit");
        let mut dropped = s(1, 40);
        dropped.dropped = true;
        assert_eq!(v.update(&dropped), 39);
        assert_eq!(
            v.rtt_noload(),
            Some(Duration::from_millis(100)),
            "a dropped sample's rtt is not the service's"
        );
    }

    #[test]
    fn probes_rtt_noload_again_after_limit_times_multiplier_samples() {
        let mut v = Vegas::new(VegasConfig {
            initial_limit: 10,
            probe_multiplier: 2,
            seed: Some(7),
            ..VegasConfig::default()
        })
        .unwrap();
        v.update(&s(100, 1));
        // The service got slower for good; within 20 samples (2 × 10 × at
        // most 1) the baseline follows.
        let mut probed = false;
        for _ in 0..20 {
            v.update(&s(200, 1));
            probed |= v.rtt_noload() == Some(Duration::from_millis(200));
        }
        assert!(probed);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let bad = |f: fn(&mut VegasConfig)| {
            let mut c = VegasConfig::default();
            f(&mut c);
            Vegas::new(c).unwrap_err().field().to_owned()
        };
        assert_eq!(bad(|c| c.smoothing = 0.0), "smoothing");
        assert_eq!(bad(|c| c.alpha = 0), "alpha");
        assert_eq!(bad(|c| c.beta = 2), "beta");
        assert_eq!(bad(|c| c.probe_multiplier = 0), "probe_multiplier");
        assert_eq!(bad(|c| c.max_limit = 0), "max_limit");
    }
}
