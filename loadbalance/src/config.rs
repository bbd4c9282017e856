//! Configuration: [`Config`] and its parts, validated by
//! [`Config::validate`], built with a [`Builder`](crate::Builder) or read
//! with serde (feature `serde`).

use std::borrow::Cow;
use std::time::Duration;

use watertight_core::config::{count, fraction, name, non_zero, within_range};
use watertight_core::Locality;

use crate::error::{ConfigError, COMPONENT};
use crate::outlier::OutlierDetection;

/// The largest ring a ring-hash table may have (Envoy's cap).
pub(crate) const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// The largest Maglev table.
pub(crate) const MAX_MAGLEV_TABLE: u64 = 5_000_011;

/// A balancer's configuration.
///
/// | field | default | from |
/// |---|---|---|
/// | `name` | `"loadbalance"` | |
/// | `local_locality` | `None` | Envoy's `local_cluster` locality |
/// | `overprovisioning_factor` | 1.4 | Envoy |
/// | `healthy_panic_threshold` | 50 (%) | Envoy |
/// | `fail_traffic_on_panic` | `false` | Envoy |
/// | `locality` | [`LocalityPolicy::Auto`] | |
/// | `subsets` | `None` | Envoy subset load balancer |
/// | `pick` | P2C over PeakEWMA | Finagle, linkerd |
/// | `peak_ewma` | decay 10 s, default RTT 30 ms, failure penalty 250 ms | Finagle, linkerd |
/// | `active_request_bias` | 1.0 | Envoy least-request |
/// | `slow_start` | `None` | Envoy |
/// | `outlier_detection` | `Some(`Envoy's defaults`)` with `always_eject_one` | Envoy |
/// | `seed` | `None` (entropy) | |
///
/// With feature `serde` it deserializes from (TOML shown; every field is
/// optional):
///
/// ```toml
/// name = "payments"
/// local_locality = { region = "eu-west-1", zone = "eu-west-1a" }
/// overprovisioning_factor = 1.4
/// healthy_panic_threshold = 50.0
/// locality = { kind = "zone_aware", min_cluster_size = 6, routing_enabled = 100.0 }
/// subsets = { key = "version", shares = [{ value = "v2", share = 0.05 }] }
/// pick = { kind = "p2c", load = "peak_ewma" }     # or "least_requests"; { kind = "round_robin" }, { kind = "ring_hash" }, { kind = "maglev" }
/// peak_ewma = { decay = "10s", default_rtt = "30ms", failure_penalty = "250ms" }
/// slow_start = { window = "60s", aggression = 1.0, min_weight_percent = 10.0 }
/// outlier_detection = { interval = "10s", base_ejection_time = "30s", max_ejection_percent = 10.0 }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct Config {
    /// The instance name: the `name` label of its metrics and the `name`
    /// field of its traces and events. Not empty.
    pub name: String,
    /// Where this client runs. Zone-aware routing and
    /// [`LocalityPolicy::PreferLocal`] need it; localities match by region
    /// and zone (the subzone is ignored).
    pub local_locality: Option<Locality>,
    /// Envoy's overprovisioning factor: a priority level (or locality) is
    /// fully available while `factor · healthy / total >= 1`. In
    /// `[1, 100]`.
    pub overprovisioning_factor: f64,
    /// Envoy's healthy panic threshold, in percent: a priority level whose
    /// healthy and degraded endpoints are fewer than this share of its
    /// endpoints balances over all of them. In `[0, 100]`; 0 disables panic.
    pub healthy_panic_threshold: f64,
    /// Fail requests that land on a priority level in panic with
    /// [`NoHealthyEndpoints`](crate::error::NoHealthyEndpoints) instead of
    /// sending them to unhealthy endpoints (Envoy's
    /// `fail_traffic_on_panic`).
    pub fail_traffic_on_panic: bool,
    /// How the balancer chooses a locality.
    pub locality: LocalityPolicy,
    /// Label subsets with traffic shares (canaries).
    pub subsets: Option<Subsets>,
    /// How the balancer chooses an endpoint within the chosen set.
    pub pick: Pick,
    /// PeakEWMA's parameters (used by [`Load::PeakEwma`]).
    pub peak_ewma: PeakEwma,
    /// With unequal weights (or slow start) the pick is earliest deadline
    /// first over `weight / (active + 1)^bias` (Envoy's least-request
    /// balancer). 0 ignores active requests. Finite, `>= 0`.
    pub active_request_bias: f64,
    /// Ramps new endpoints up instead of giving them their full share at
    /// once.
    pub slow_start: Option<SlowStart>,
    /// Ejects endpoints that fail more than their peers; `None` turns it
    /// off.
    pub outlier_detection: Option<OutlierDetection>,
    /// Seed of every random choice; `None` seeds from entropy.
    pub seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "loadbalance".to_owned(),
            local_locality: None,
            overprovisioning_factor: 1.4,
            healthy_panic_threshold: 50.0,
            fail_traffic_on_panic: false,
            locality: LocalityPolicy::Auto,
            subsets: None,
            pick: Pick::default(),
            peak_ewma: PeakEwma::default(),
            active_request_bias: 1.0,
            slow_start: None,
            outlier_detection: Some(OutlierDetection::default()),
            seed: None,
        }
    }
}

/// How the balancer chooses a locality (zone) before it chooses an
/// endpoint. See the [`locality` module docs](crate#the-pick-pipeline).
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)
)]
#[non_exhaustive]
pub enum LocalityPolicy {
    /// [`ZoneAware`](Self::ZoneAware) with its defaults when a local
    /// cluster is given, else [`PreferLocal`](Self::PreferLocal) when
    /// `local_locality` is set, else [`Disabled`](Self::Disabled).
    #[default]
    Auto,
    /// No locality stage: every healthy endpoint of the priority level.
    Disabled,
    /// Envoy's zone-aware routing: keep traffic in the local zone as far as
    /// the upstream's capacity there matches the clients' share there.
    /// Needs `local_locality` and a local cluster
    /// ([`Builder::local_cluster`](crate::Builder::local_cluster)).
    ZoneAware(ZoneAware),
    /// Envoy's locality-weighted balancing: a locality is chosen with
    /// probability proportional to
    /// `weight · min(1, overprovisioning · healthy / total)`; its weight is
    /// the sum of its endpoints' weights.
    LocalityWeighted,
    /// Stay in the local zone while its healthy share covers it
    /// (`min(1, overprovisioning · healthy / total)`), spill the rest to the
    /// other zones as [`LocalityWeighted`](Self::LocalityWeighted) does.
    /// Needs `local_locality`.
    PreferLocal,
    /// Netflix Ribbon's zone avoidance: drop zones that are blacked out
    /// and, once the load per server passes a trigger, the worst zone; pick
    /// among the rest in proportion to their endpoint counts.
    ZoneAvoidance(ZoneAvoidance),
}

/// Envoy's zone-aware routing parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct ZoneAware {
    /// No zone routing while the priority-0 level has fewer healthy
    /// endpoints than this (Envoy's `min_cluster_size`, default 6).
    pub min_cluster_size: u32,
    /// The percentage of requests zone routing applies to (Envoy's
    /// `routing_enabled`, default 100). In `[0, 100]`.
    pub routing_enabled: f64,
}

impl Default for ZoneAware {
    fn default() -> Self {
        ZoneAware {
            min_cluster_size: 6,
            routing_enabled: 100.0,
        }
    }
}

impl ZoneAware {
    /// Sets `min_cluster_size`.
    pub fn min_cluster_size(mut self, n: u32) -> Self {
        self.min_cluster_size = n;
        self
    }

    /// Sets `routing_enabled` (percent).
    pub fn routing_enabled(mut self, percent: f64) -> Self {
        self.routing_enabled = percent;
        self
    }
}

/// Netflix Ribbon's zone-avoidance parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct ZoneAvoidance {
    /// Once some zone's active requests per available endpoint reach this,
    /// the worst zone is avoided (Ribbon's
    /// `triggeringLoadPerServerThreshold`, default 0.2). Finite, `>= 0`.
    pub trigger_load_per_server: f64,
    /// A zone whose share of unavailable endpoints reaches this is avoided
    /// (Ribbon's `avoidZoneWithBlackoutPercetage`, default 0.99999). In
    /// `(0, 1]`.
    pub blackout: f64,
    /// How often the per-zone load is re-read (it is also re-read on every
    /// membership or health change). Not zero; default 1 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub refresh: Duration,
}

impl Default for ZoneAvoidance {
    fn default() -> Self {
        ZoneAvoidance {
            trigger_load_per_server: 0.2,
            blackout: 0.99999,
            refresh: Duration::from_secs(1),
        }
    }
}

/// Label subsets with traffic shares: the endpoints whose label `key` has
/// one of the listed values form that value's subset and receive its
/// share; every other endpoint forms the default subset and receives the
/// rest. Like Envoy's subset load balancer, each subset is balanced on its
/// own (priorities, localities, outlier ejection), and a subset without
/// available endpoints falls back to the default one.
///
/// ```
/// use watertight_loadbalance::Subsets;
///
/// // 5% of requests go to endpoints labelled `version=v2`.
/// let canary = Subsets::new("version").share("v2", 0.05);
/// # assert_eq!(canary.shares.len(), 1);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct Subsets {
    /// The label that defines the subsets. Not empty.
    pub key: String,
    /// The subsets with a share of their own; distinct, non-empty values;
    /// each share in `(0, 1]`, their sum at most 1.
    pub shares: Vec<SubsetShare>,
}

impl Subsets {
    /// Subsets keyed by label `key`, none with a share yet.
    pub fn new(key: impl Into<String>) -> Self {
        Subsets {
            key: key.into(),
            shares: Vec::new(),
        }
    }

    /// Gives the endpoints labelled `key=value` this fraction of requests.
    pub fn share(mut self, value: impl Into<String>, share: f64) -> Self {
        self.shares.push(SubsetShare {
            value: value.into(),
            share,
        });
        self
    }
}

/// One subset's share of requests.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct SubsetShare {
    /// The label value.
    pub value: String,
    /// The fraction of requests, in `(0, 1]`.
    pub share: f64,
}

/// How an endpoint is picked within the chosen set.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)
)]
#[non_exhaustive]
pub enum Pick {
    /// Power of two choices without replacement (Mitzenmacher): sample two
    /// endpoints, take the less loaded. With unequal weights, earliest
    /// deadline first over `weight / (active + 1)^bias` instead.
    P2c {
        /// How load is measured.
        load: Load,
    },
    /// Round robin; weighted round robin (earliest deadline first) when
    /// weights differ.
    RoundRobin,
    /// Consistent hashing on a ring (Karger et al., Envoy's ring hash) of
    /// the request key; requests without a key use P2C over PeakEWMA.
    RingHash(RingHash),
    /// Maglev consistent hashing (Eisenbud et al., NSDI 2016) of the
    /// request key; requests without a key use P2C over PeakEWMA.
    Maglev(Maglev),
}

impl Default for Pick {
    fn default() -> Self {
        Pick::P2c {
            load: Load::PeakEwma,
        }
    }
}

/// How P2C measures an endpoint's load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Load {
    /// `rtt · (pending + 1)` with a peak-sensitive moving average of the
    /// round-trip time (Finagle, linkerd). See [`PeakEwma`].
    #[default]
    PeakEwma,
    /// Requests in flight.
    LeastRequests,
}

/// PeakEWMA's parameters.
///
/// The RTT estimate jumps to any sample above it (peak), blends samples
/// below it by recency with time constant `decay`, and decays towards zero
/// between samples so an idle endpoint is tried again. A failure counts as
/// a sample of at least `failure_penalty`, or of the server's retry hint
/// (`Retry-After`, `grpc-retry-pushback-ms`, read through
/// [`ServerHints`](crate::ServerHints)) up to `max_hint_penalty`: a server
/// that fails fast must not look cheap.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct PeakEwma {
    /// The time constant of the moving average. Not zero; default 10 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub decay: Duration,
    /// The estimate of an endpoint not measured yet. Not zero; default 30 ms.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub default_rtt: Duration,
    /// The least RTT sample a failure counts as; default 250 ms.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub failure_penalty: Duration,
    /// The largest sample a server hint counts as; default 30 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_hint_penalty: Duration,
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma {
            decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(30),
            failure_penalty: Duration::from_millis(250),
            max_hint_penalty: Duration::from_secs(30),
        }
    }
}

/// Ring-hash table parameters (Envoy's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct RingHash {
    /// The least number of points on the ring; default 1024.
    pub min_ring_size: u64,
    /// The most points on the ring; default and maximum 8,388,608.
    pub max_ring_size: u64,
}

impl Default for RingHash {
    fn default() -> Self {
        RingHash {
            min_ring_size: 1024,
            max_ring_size: MAX_RING_SIZE,
        }
    }
}

/// Maglev table parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct Maglev {
    /// The table size: a prime, at most 5,000,011; default 65,537
    /// (Envoy's). It should be well above 100 times the endpoint count.
    pub table_size: u64,
}

impl Default for Maglev {
    fn default() -> Self {
        Maglev { table_size: 65_537 }
    }
}

/// Envoy's slow start: an endpoint that joins after the first membership
/// has weight `weight · max(min_weight_percent / 100, (t / window)^(1 /
/// aggression))` for `t` from its arrival to the end of `window`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct SlowStart {
    /// The ramp's length. Not zero; default 60 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub window: Duration,
    /// The ramp's shape: 1 is linear, larger ramps faster at first.
    /// Finite, `> 0`; default 1.
    pub aggression: f64,
    /// The least weight during the ramp, in percent of the full weight.
    /// In `(0, 100]`; default 10.
    pub min_weight_percent: f64,
}

impl Default for SlowStart {
    fn default() -> Self {
        SlowStart {
            window: Duration::from_secs(60),
            aggression: 1.0,
            min_weight_percent: 10.0,
        }
    }
}

impl SlowStart {
    /// A linear ramp over `window` with the other defaults.
    pub fn new(window: Duration) -> Self {
        SlowStart {
            window,
            ..SlowStart::default()
        }
    }

    /// Sets `aggression`.
    pub fn aggression(mut self, aggression: f64) -> Self {
        self.aggression = aggression;
        self
    }

    /// Sets `min_weight_percent`.
    pub fn min_weight_percent(mut self, percent: f64) -> Self {
        self.min_weight_percent = percent;
        self
    }

    /// The weight factor `t` after arrival: in `(0, 1]`.
    pub fn factor(&self, t: Duration) -> f64 {
        if t >= self.window {
            return 1.0;
        }
        let ratio = t.as_secs_f64() / self.window.as_secs_f64();
        let ramp = ratio.powf(1.0 / self.aggression);
        ramp.max(self.min_weight_percent / 100.0).min(1.0)
    }
}

/// An error in `field` of the balancer's configuration.
pub(crate) fn err(field: &'static str, reason: impl Into<Cow<'static, str>>) -> ConfigError {
    ConfigError::new(COMPONENT, field, reason)
}

/// `v` must be a percentage in `[0, 100]`.
pub(crate) fn percent(field: &'static str, v: f64) -> Result<(), ConfigError> {
    if (0.0..=100.0).contains(&v) {
        Ok(())
    } else {
        Err(err(
            field,
            format!("must be a percentage in [0, 100], got {v}"),
        ))
    }
}

/// `v` must be finite and `> 0`.
pub(crate) fn positive(field: &'static str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(err(field, format!("must be finite and > 0, got {v}")))
    }
}

/// `v` must be finite and `>= 0`.
fn non_negative(field: &'static str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(err(field, format!("must be finite and >= 0, got {v}")))
    }
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

impl Config {
    /// Checks every rule:
    ///
    /// - `name` is not empty;
    /// - `overprovisioning_factor` is in `[1, 100]`;
    /// - `healthy_panic_threshold`, `locality.routing_enabled` are
    ///   percentages in `[0, 100]`;
    /// - `locality.trigger_load_per_server` is finite and `>= 0`,
    ///   `locality.blackout` in `(0, 1]`, `locality.refresh` not zero;
    /// - `local_locality` is set for `ZoneAware` and `PreferLocal`;
    /// - `subsets.key` and every `subsets.shares[].value` are non-empty and
    ///   the values distinct; every share is in `(0, 1]` and their sum at
    ///   most 1;
    /// - `peak_ewma.decay` and `peak_ewma.default_rtt` are not zero;
    /// - `active_request_bias` is finite and `>= 0`;
    /// - `pick.min_ring_size` is in `1..=max_ring_size`, `pick.max_ring_size`
    ///   at most 8,388,608; `pick.table_size` is a prime in
    ///   `7..=5_000_011`;
    /// - `slow_start.window` is not zero, `slow_start.aggression` finite and
    ///   `> 0`, `slow_start.min_weight_percent` in `(0, 100]`;
    /// - the rules of [`OutlierDetection::validate`].
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that breaks a rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        name(COMPONENT, &self.name)?;
        within_range(
            COMPONENT,
            "overprovisioning_factor",
            self.overprovisioning_factor,
            1.0,
            100.0,
        )?;
        percent("healthy_panic_threshold", self.healthy_panic_threshold)?;
        match &self.locality {
            LocalityPolicy::ZoneAware(z) => {
                percent("locality.routing_enabled", z.routing_enabled)?;
                if self.local_locality.is_none() {
                    return Err(err("local_locality", "must be set for zone-aware routing"));
                }
            }
            LocalityPolicy::PreferLocal if self.local_locality.is_none() => {
                return Err(err(
                    "local_locality",
                    "must be set for prefer-local routing",
                ));
            }
            LocalityPolicy::ZoneAvoidance(z) => {
                non_negative(
                    "locality.trigger_load_per_server",
                    z.trigger_load_per_server,
                )?;
                fraction(COMPONENT, "locality.blackout", z.blackout)?;
                non_zero(COMPONENT, "locality.refresh", z.refresh)?;
            }
            _ => {}
        }
        if let Some(s) = &self.subsets {
            if s.key.is_empty() {
                return Err(err("subsets.key", "must not be empty"));
            }
            let mut sum = 0.0;
            for (i, share) in s.shares.iter().enumerate() {
                if share.value.is_empty() {
                    return Err(err("subsets.shares.value", "must not be empty"));
                }
                if s.shares[..i].iter().any(|o| o.value == share.value) {
                    return Err(err(
                        "subsets.shares.value",
                        format!("{:?} is listed twice", share.value),
                    ));
                }
                fraction(COMPONENT, "subsets.shares.share", share.share)?;
                sum += share.share;
            }
            if sum > 1.0 + 1e-9 {
                return Err(err(
                    "subsets.shares.share",
                    format!("must add up to at most 1, got {sum}"),
                ));
            }
        }
        non_zero(COMPONENT, "peak_ewma.decay", self.peak_ewma.decay)?;
        non_zero(
            COMPONENT,
            "peak_ewma.default_rtt",
            self.peak_ewma.default_rtt,
        )?;
        non_negative("active_request_bias", self.active_request_bias)?;
        match self.pick {
            Pick::RingHash(r) => {
                if r.max_ring_size > MAX_RING_SIZE {
                    return Err(err(
                        "pick.max_ring_size",
                        format!("must be at most {MAX_RING_SIZE}, got {}", r.max_ring_size),
                    ));
                }
                count(
                    COMPONENT,
                    "pick.min_ring_size",
                    r.min_ring_size,
                    r.max_ring_size,
                )?;
            }
            Pick::Maglev(m)
                if !(7..=MAX_MAGLEV_TABLE).contains(&m.table_size) || !is_prime(m.table_size) =>
            {
                return Err(err(
                    "pick.table_size",
                    format!(
                        "must be a prime in 7..={MAX_MAGLEV_TABLE}, got {}",
                        m.table_size
                    ),
                ));
            }
            _ => {}
        }
        if let Some(s) = &self.slow_start {
            non_zero(COMPONENT, "slow_start.window", s.window)?;
            positive("slow_start.aggression", s.aggression)?;
            if !(s.min_weight_percent > 0.0 && s.min_weight_percent <= 100.0) {
                return Err(err(
                    "slow_start.min_weight_percent",
                    format!("must be in (0, 100], got {}", s.min_weight_percent),
                ));
            }
        }
        if let Some(o) = &self.outlier_detection {
            o.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn slow_start_factor_follows_the_formula() {
        let s = SlowStart::new(Duration::from_secs(100));
        assert_eq!(s.factor(Duration::ZERO), 0.1);
        assert!((s.factor(Duration::from_secs(50)) - 0.5).abs() < 1e-12);
        assert_eq!(s.factor(Duration::from_secs(100)), 1.0);
        let fast = s.aggression(2.0);
        assert!((fast.factor(Duration::from_secs(25)) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases: Vec<(Config, &str)> = vec![
            (
                Config {
                    name: String::new(),
                    ..Config::default()
                },
                "name",
            ),
            (
                Config {
                    overprovisioning_factor: 0.5,
                    ..Config::default()
                },
                "overprovisioning_factor",
            ),
            (
                Config {
                    healthy_panic_threshold: 101.0,
                    ..Config::default()
                },
                "healthy_panic_threshold",
            ),
            (
                Config {
                    locality: LocalityPolicy::ZoneAware(ZoneAware::default()),
                    ..Config::default()
                },
                "local_locality",
            ),
            (
                Config {
                    subsets: Some(Subsets::new("version").share("v2", 0.7).share("v3", 0.7)),
                    ..Config::default()
                },
                "subsets.shares.share",
            ),
            (
                Config {
                    subsets: Some(Subsets::new("version").share("v2", 0.1).share("v2", 0.1)),
                    ..Config::default()
                },
                "subsets.shares.value",
            ),
            (
                Config {
                    pick: Pick::Maglev(Maglev { table_size: 65_536 }),
                    ..Config::default()
                },
                "pick.table_size",
            ),
            (
                Config {
                    pick: Pick::RingHash(RingHash {
                        min_ring_size: 0,
                        max_ring_size: 10,
                    }),
                    ..Config::default()
                },
                "pick.min_ring_size",
            ),
            (
                Config {
                    slow_start: Some(SlowStart::new(Duration::ZERO)),
                    ..Config::default()
                },
                "slow_start.window",
            ),
            (
                Config {
                    active_request_bias: f64::NAN,
                    ..Config::default()
                },
                "active_request_bias",
            ),
        ];
        for (config, field) in cases {
            let e = config.validate().unwrap_err();
            assert_eq!((e.component(), e.field()), ("load balancer", field), "{e}");
            assert_eq!(
                e.to_string(),
                format!(
                    "invalid load balancer configuration: `{field}` {}",
                    e.reason()
                )
            );
        }
    }
}
