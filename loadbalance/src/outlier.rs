//! Outlier detection with Envoy's semantics and defaults.
//!
//! Every response the balancer sees is classified once, through
//! [`Classify`](watertight_core::Classify), and feeds three detectors:
//!
//! - **consecutive failures**, inline: the `consecutive_5xx`-th failure in a
//!   row (any [`Failure`](watertight_core::ResponseClass::Failure)) and the
//!   `consecutive_gateway_failure`-th retryable failure in a row (Envoy's
//!   502/503/504 and connection errors, which
//!   [`ServerErrorsAsFailures`](watertight_core::classify) marks retryable)
//!   eject at once; a success resets both counts, a non-retryable failure
//!   resets the gateway count;
//! - **success rate**, every `interval`: among endpoints with at least
//!   `success_rate_request_volume` requests in the interval, and only if
//!   there are `success_rate_minimum_hosts` of them, those whose success
//!   rate is below `mean - success_rate_stdev_factor · stdev` (population
//!   standard deviation) are ejected. The worked example: rates
//!   {50, 100, 100, 100, 100} give mean 90, stdev 20, threshold 52, and eject
//!   the first;
//! - **failure percentage**, every `interval`: among endpoints with at least
//!   `failure_percentage_request_volume` requests, if there are
//!   `failure_percentage_minimum_hosts`, those failing at least
//!   `failure_percentage_threshold` percent are ejected.
//!
//! A detection ejects only with its enforcement percentage (a roll of the
//! balancer's RNG) and only if `100 · (ejected + 1) / endpoints <=
//! max_ejection_percent` — or, with `always_eject_one` (on by default), if
//! no endpoint is ejected yet, so a 9-endpoint cluster can eject one even
//! though Envoy's default of 10% would never allow it. A detection that is
//! not enforced is still logged.
//!
//! An ejection lasts `min(base_ejection_time · k, max_ejection_time) +
//! jitter`, where `k` grows by one on every ejection while
//! `base · k < max + base`, and drops by one for every `interval` the
//! endpoint then stays in service. An ejected endpoint receives no traffic
//! unless its priority level is in panic.
//!
//! Source: Envoy's outlier detection (architecture overview "Outlier
//! detection" and the `envoy.config.cluster.v3.OutlierDetection` reference).

use std::time::Duration;

use watertight_core::config::non_zero;

use crate::config::{err, percent, positive};
use crate::error::{ConfigError, COMPONENT};

/// Outlier detection's parameters; the defaults are Envoy's, except
/// `always_eject_one`.
///
/// | field | default |
/// |---|---|
/// | `interval` | 10 s |
/// | `base_ejection_time` | 30 s |
/// | `max_ejection_time` | `max(300 s, base_ejection_time)` |
/// | `max_ejection_time_jitter` | 0 |
/// | `max_ejection_percent` | 10 |
/// | `always_eject_one` | `true` |
/// | `consecutive_5xx` | 5, enforcing 100% |
/// | `consecutive_gateway_failure` | 5, enforcing 0% |
/// | `success_rate_*` | minimum hosts 5, request volume 100, stdev factor 1.9, enforcing 100% |
/// | `failure_percentage_*` | threshold 85, minimum hosts 5, request volume 50, enforcing 0% |
/// | `event_log_capacity` | 256 |
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct OutlierDetection {
    /// Time between sweeps of the success-rate and failure-percentage
    /// detectors, and the unit of `k`'s decay. Not zero.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub interval: Duration,
    /// The first ejection's length. Not zero.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub base_ejection_time: Duration,
    /// The longest ejection; `None` is `max(300 s, base_ejection_time)`.
    /// At least `base_ejection_time`.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_ejection_time: Option<Duration>,
    /// A random extra in `[0, jitter]` added to each ejection.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_ejection_time_jitter: Duration,
    /// The most endpoints ejected at once, in percent of all endpoints. In
    /// `[0, 100]`.
    pub max_ejection_percent: f64,
    /// Allow one ejection whatever `max_ejection_percent` says.
    pub always_eject_one: bool,
    /// Failures in a row that eject; `None` turns the detector off. At
    /// least 1.
    pub consecutive_5xx: Option<u32>,
    /// Percent chance a `consecutive_5xx` detection ejects. At most 100.
    pub enforcing_consecutive_5xx: u8,
    /// Retryable (gateway) failures in a row that eject; `None` turns the
    /// detector off. At least 1.
    pub consecutive_gateway_failure: Option<u32>,
    /// Percent chance a `consecutive_gateway_failure` detection ejects. At
    /// most 100.
    pub enforcing_consecutive_gateway_failure: u8,
    /// Endpoints with enough volume the success-rate detector needs.
    pub success_rate_minimum_hosts: u32,
    /// Requests in an interval an endpoint needs to count for the
    /// success-rate detector. At least 1.
    pub success_rate_request_volume: u64,
    /// How many standard deviations below the mean is an outlier. Finite,
    /// `> 0`.
    pub success_rate_stdev_factor: f64,
    /// Percent chance a success-rate detection ejects. At most 100.
    pub enforcing_success_rate: u8,
    /// The failure percentage that ejects. At most 100.
    pub failure_percentage_threshold: u8,
    /// Endpoints with enough volume the failure-percentage detector needs.
    pub failure_percentage_minimum_hosts: u32,
    /// Requests in an interval an endpoint needs to count for the
    /// failure-percentage detector. At least 1.
    pub failure_percentage_request_volume: u64,
    /// Percent chance a failure-percentage detection ejects. At most 100.
    pub enforcing_failure_percentage: u8,
    /// How many events the log keeps (the oldest go first).
    pub event_log_capacity: usize,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: None,
            max_ejection_time_jitter: Duration::ZERO,
            max_ejection_percent: 10.0,
            always_eject_one: true,
            consecutive_5xx: Some(5),
            enforcing_consecutive_5xx: 100,
            consecutive_gateway_failure: Some(5),
            enforcing_consecutive_gateway_failure: 0,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1.9,
            enforcing_success_rate: 100,
            failure_percentage_threshold: 85,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
            enforcing_failure_percentage: 0,
            event_log_capacity: 256,
        }
    }
}

/// An enforcement percentage or threshold: at most 100.
fn at_most_100(field: &'static str, v: u8) -> Result<(), ConfigError> {
    percent(field, v.into())
}

impl OutlierDetection {
    /// The effective longest ejection.
    pub fn max_ejection(&self) -> Duration {
        self.max_ejection_time
            .unwrap_or_else(|| self.base_ejection_time.max(Duration::from_secs(300)))
    }

    /// Checks the rules listed on the fields.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that breaks a rule
    /// (`outlier_detection.interval`, …).
    pub fn validate(&self) -> Result<(), ConfigError> {
        non_zero(COMPONENT, "outlier_detection.interval", self.interval)?;
        non_zero(
            COMPONENT,
            "outlier_detection.base_ejection_time",
            self.base_ejection_time,
        )?;
        if self.max_ejection() < self.base_ejection_time {
            return Err(err(
                "outlier_detection.max_ejection_time",
                "must be at least base_ejection_time",
            ));
        }
        percent(
            "outlier_detection.max_ejection_percent",
            self.max_ejection_percent,
        )?;
        if self.consecutive_5xx == Some(0) {
            return Err(err(
                "outlier_detection.consecutive_5xx",
                "must be at least 1",
            ));
        }
        if self.consecutive_gateway_failure == Some(0) {
            return Err(err(
                "outlier_detection.consecutive_gateway_failure",
                "must be at least 1",
            ));
        }
        at_most_100(
            "outlier_detection.enforcing_consecutive_5xx",
            self.enforcing_consecutive_5xx,
        )?;
        at_most_100(
            "outlier_detection.enforcing_consecutive_gateway_failure",
            self.enforcing_consecutive_gateway_failure,
        )?;
        at_most_100(
            "outlier_detection.enforcing_success_rate",
            self.enforcing_success_rate,
        )?;
        at_most_100(
            "outlier_detection.enforcing_failure_percentage",
            self.enforcing_failure_percentage,
        )?;
        at_most_100(
            "outlier_detection.failure_percentage_threshold",
            self.failure_percentage_threshold,
        )?;
        if self.success_rate_request_volume == 0 {
            return Err(err(
                "outlier_detection.success_rate_request_volume",
                "must be at least 1",
            ));
        }
        if self.failure_percentage_request_volume == 0 {
            return Err(err(
                "outlier_detection.failure_percentage_request_volume",
                "must be at least 1",
            ));
        }
        positive(
            "outlier_detection.success_rate_stdev_factor",
            self.success_rate_stdev_factor,
        )?;
        Ok(())
    }

    /// The ejection length for multiplier `k`, before jitter:
    /// `min(base · k, max)`.
    pub fn ejection_time(&self, k: u32) -> Duration {
        self.base_ejection_time
            .saturating_mul(k)
            .min(self.max_ejection())
    }

    /// `k` after one more ejection: `k + 1` while `base · k < max + base`.
    pub fn next_multiplier(&self, k: u32) -> u32 {
        let base = self.base_ejection_time;
        if base.saturating_mul(k) < self.max_ejection().saturating_add(base) {
            k + 1
        } else {
            k
        }
    }

    /// Whether one more ejection is allowed with `ejected` of `hosts`
    /// endpoints already ejected.
    pub fn may_eject(&self, ejected: usize, hosts: usize) -> bool {
        if hosts == 0 {
            return false;
        }
        let pct = 100.0 * (ejected + 1) as f64 / hosts as f64;
        pct <= self.max_ejection_percent || (ejected == 0 && self.always_eject_one)
    }
}

/// The success-rate detector's threshold for these success rates (in
/// percent): `mean - factor · stdev` with the population standard deviation.
///
/// ```
/// use watertight_loadbalance::outlier::success_rate_threshold;
///
/// let t = success_rate_threshold(&[50.0, 100.0, 100.0, 100.0, 100.0], 1.9);
/// assert!((t - 52.0).abs() < 1e-9);
/// ```
pub fn success_rate_threshold(rates: &[f64], factor: f64) -> f64 {
    if rates.is_empty() {
        return 0.0;
    }
    let n = rates.len() as f64;
    let mean = rates.iter().sum::<f64>() / n;
    let var = rates.iter().map(|r| (r - mean) * (r - mean)).sum::<f64>() / n;
    mean - factor * var.sqrt()
}

/// Which detector found an outlier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Detection {
    /// `consecutive_5xx` failures in a row.
    Consecutive5xx,
    /// `consecutive_gateway_failure` retryable failures in a row.
    ConsecutiveGatewayFailure,
    /// A success rate below the cluster's threshold.
    SuccessRate,
    /// A failure percentage at or above the threshold.
    FailurePercentage,
    /// Ejected through the handle.
    Manual,
}

impl Detection {
    /// `consecutive_5xx`, `consecutive_gateway_failure`, `success_rate`,
    /// `failure_percentage` or `manual`: the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Detection::Consecutive5xx => "consecutive_5xx",
            Detection::ConsecutiveGatewayFailure => "consecutive_gateway_failure",
            Detection::SuccessRate => "success_rate",
            Detection::FailurePercentage => "failure_percentage",
            Detection::Manual => "manual",
        }
    }
}

impl std::fmt::Display for Detection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_threshold_is_52() {
        let t = success_rate_threshold(&[50.0, 100.0, 100.0, 100.0, 100.0], 1.9);
        assert!((t - 52.0).abs() < 1e-9);
    }

    #[test]
    fn multiplier_grows_until_max_plus_base() {
        let o = OutlierDetection::default();
        let mut k = 0;
        let mut times = Vec::new();
        for _ in 0..14 {
            k = o.next_multiplier(k);
            times.push(o.ejection_time(k).as_secs());
        }
        assert_eq!(
            times,
            [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300, 300, 300]
        );
        assert_eq!(k, 11);
    }

    #[test]
    fn max_ejection_percent_and_always_eject_one() {
        let o = OutlierDetection::default();
        assert!(o.may_eject(0, 9));
        assert!(!o.may_eject(1, 9));
        assert!(o.may_eject(1, 20));
        assert!(!o.may_eject(2, 20));
        let strict = OutlierDetection {
            always_eject_one: false,
            ..OutlierDetection::default()
        };
        assert!(!strict.may_eject(0, 9));
        assert!(strict.may_eject(0, 10));
    }

    #[test]
    fn invalid_fields_are_named() {
        let o = OutlierDetection {
            max_ejection_time: Some(Duration::from_secs(1)),
            ..OutlierDetection::default()
        };
        assert_eq!(
            o.validate().unwrap_err().field(),
            "outlier_detection.max_ejection_time"
        );
        let o = OutlierDetection {
            enforcing_success_rate: 101,
            ..OutlierDetection::default()
        };
        assert_eq!(
            o.validate().unwrap_err().field(),
            "outlier_detection.enforcing_success_rate"
        );
        let o = OutlierDetection {
            consecutive_5xx: Some(0),
            ..OutlierDetection::default()
        };
        assert_eq!(
            o.validate().unwrap_err().field(),
            "outlier_detection.consecutive_5xx"
        );
    }
}
