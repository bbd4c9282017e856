//! [`Aimd`]: additive increase, multiplicative decrease.
//!
//! Netflix concurrency-limits' `AIMDLimit`: the limit grows by one per
//! sample (per window, under [`Windowed`](super::Windowed)) in which the
//! service was busy — in flight at least half the limit, so an idle service
//! does not inflate it — and nothing was dropped; it is multiplied by
//! `backoff_ratio` on a drop or on an RTT above `timeout`. The loss-based
//! scheme of TCP's congestion avoidance: it needs drops to find the limit,
//! so it suits clients of servers that shed (`503`, `429`) or time out.

use std::time::Duration;

use watertight_core::config;

use super::{LimitAlgorithm, Sample};
use crate::error::check::{self, COMPONENT};
use crate::error::ConfigError;

/// The configuration of [`Aimd`]; the defaults are Netflix's.
///
/// | field | default |
/// |---|---|
/// | `initial_limit` | 20 |
/// | `min_limit` | 20 |
/// | `max_limit` | 200 |
/// | `backoff_ratio` | 0.9 |
/// | `timeout` | 5 s |
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct AimdConfig {
    /// The limit to start with, in `min_limit..=max_limit`.
    pub initial_limit: u32,
    /// The limit never goes below this (at least 1).
    pub min_limit: u32,
    /// The limit never goes above this (at most `2^30`).
    pub max_limit: u32,
    /// The factor applied on a drop, in `[0.5, 1.0)`.
    pub backoff_ratio: f64,
    /// An RTT above this counts as a drop; not zero.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub timeout: Duration,
}

impl Default for AimdConfig {
    fn default() -> Self {
        AimdConfig {
            initial_limit: 20,
            min_limit: 20,
            max_limit: 200,
            backoff_ratio: 0.9,
            timeout: Duration::from_secs(5),
        }
    }
}

impl AimdConfig {
    /// Checks every rule given on the fields.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that breaks a rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check::limits(self.min_limit, self.initial_limit, self.max_limit)?;
        if !(0.5..1.0).contains(&self.backoff_ratio) {
            return Err(check::invalid(
                "backoff_ratio",
                format!("must be in [0.5, 1.0), got {}", self.backoff_ratio),
            ));
        }
        config::non_zero(COMPONENT, "timeout", self.timeout)
    }
}

/// Additive increase, multiplicative decrease; see the [module docs](self).
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use watertight_bulkhead::limit::{Aimd, LimitAlgorithm, Sample};
///
/// let mut aimd = Aimd::default();
/// let now = Instant::now();
/// let busy = Sample::new(now, Duration::from_millis(10), 15, false);
/// assert_eq!(aimd.update(&busy), 21);
/// let dropped = Sample::new(now, Duration::from_millis(10), 15, true);
/// assert_eq!(aimd.update(&dropped), 20); // 21 × 0.9 = 18.9, held at min_limit
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Aimd {
    config: AimdConfig,
    limit: u32,
}

impl Default for Aimd {
    fn default() -> Self {
        Aimd::new(AimdConfig::default()).expect("the defaults are valid")
    }
}

impl Aimd {
    /// An algorithm with `config`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field; see
    /// [`AimdConfig::validate`].
    pub fn new(config: AimdConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Aimd {
            limit: config.initial_limit,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AimdConfig {
        &self.config
    }
}

impl LimitAlgorithm for Aimd {
    fn initial_limit(&self) -> u32 {
        self.config.initial_limit
    }

    fn update(&mut self, s: &Sample) -> u32 {
        let c = &self.config;
        let mut limit = self.limit;
        if s.dropped || s.rtt > c.timeout {
            limit = (f64::from(limit) * c.backoff_ratio) as u32;
        } else if u64::from(s.in_flight) * 2 >= u64::from(limit) {
            limit += 1;
        }
        self.limit = limit.clamp(c.min_limit, c.max_limit);
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn sample(in_flight: u32, rtt_ms: u64, dropped: bool) -> Sample {
        Sample::new(
            Instant::now(),
            Duration::from_millis(rtt_ms),
            in_flight,
            dropped,
        )
    }

    fn aimd(initial: u32, min: u32, max: u32) -> Aimd {
        Aimd::new(AimdConfig {
            initial_limit: initial,
            min_limit: min,
            max_limit: max,
            ..AimdConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn grows_by_one_only_while_in_flight_is_near_the_limit() {
        let mut a = aimd(40, 1, 200);
        assert_eq!(
            a.update(&sample(19, 10, false)),
            40,
            "app-limited: no growth"
        );
        assert_eq!(a.update(&sample(20, 10, false)), 41);
        assert_eq!(a.update(&sample(41, 10, false)), 42);
    }

    #[test]
    fn backs_off_by_the_ratio_on_a_drop_or_a_timeout() {
        let mut a = aimd(100, 1, 200);
        assert_eq!(a.update(&sample(100, 10, true)), 90);
        assert_eq!(
            a.update(&sample(1, 5_001, false)),
            81,
            "rtt over the 5 s timeout"
        );
    }

    #[test]
    fn stays_within_min_and_max() {
        let mut a = aimd(200, 150, 200);
        assert_eq!(a.update(&sample(200, 10, false)), 200);
        for _ in 0..10 {
            a.update(&sample(200, 10, true));
        }
        assert_eq!(a.update(&sample(1, 10, true)), 150);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let bad = |f: fn(&mut AimdConfig)| {
            let mut c = AimdConfig::default();
            f(&mut c);
            Aimd::new(c).unwrap_err().field().to_owned()
        };
        assert_eq!(bad(|c| c.backoff_ratio = 1.0), "backoff_ratio");
        assert_eq!(bad(|c| c.backoff_ratio = 0.4), "backoff_ratio");
        assert_eq!(bad(|c| c.min_limit = 0), "min_limit");
        assert_eq!(bad(|c| c.initial_limit = 201), "initial_limit");
        assert_eq!(bad(|c| c.max_limit = 10), "min_limit");
        assert_eq!(bad(|c| c.timeout = Duration::ZERO), "timeout");
    }
}
