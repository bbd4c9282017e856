//! Experiments: which faults, on which requests, for how long, and when to
//! stop early.
//!
//! An [`Experiment`] follows the Principles of Chaos Engineering: it states
//! a steady-state hypothesis ([`AbortWhen`]: the error rate or the p99
//! latency of the traffic the layer sees stays under a bound), keeps its
//! blast radius small (a [`Target`] and a percentage per fault), and always
//! ends: `duration` is required and a controller caps it
//! (`max_experiment_duration`, one hour by default).
//!
//! # The document form
//!
//! Experiments are read from JSON (the admin API, etcd) or TOML (feature
//! `toml`); errors name the field (`faults[1].percent`), and an unknown
//! fault `type` is its own error,
//! [`UnknownFault`](crate::error::UnknownFault):
//!
//! ```json
//! {
//!   "name": "checkout-slow-zone-c",
//!   "duration": "10m",
//!   "target": { "path_prefix": "/checkout", "zone": "c" },
//!   "faults": [
//!     { "type": "latency", "percent": 10, "median": "80ms", "p99": "400ms" },
//!     { "type": "abort", "percent": 1, "status": 503 }
//!   ],
//!   "abort_when": { "error_rate_above": 0.05, "window": "30s", "min_calls": 50 }
//! }
//! ```
//!
//! | fault `type` | fields besides `percent` (required, `0`–`100`) |
//! |---|---|
//! | `latency` | `fixed`; or `min` and `max`; or `median` and `p99`, with an optional `max` |
//! | `abort` | nothing (an [`Injected`](crate::error::Injected) error), `status` (HTTP) or `grpc_status` |
//! | `hang` | nothing |
//! | `unavailable` | `duration` |
//! | `throttle` | `bytes_per_second` |
//! | `truncate` | `after_bytes` |
//!
//! Durations are written as `"250ms"`, `"30s"`, `"10m"`. `target` takes
//! `method`, `path_prefix`, `headers` (a map), `region`, `zone`, `subzone`
//! and `labels` (a map), all optional. `abort_when` takes
//! `error_rate_above` (a fraction in `(0, 1)`) and/or `p99_above` (a
//! duration), `window` (default `"30s"`) and `min_calls` (default 20).

use std::time::Duration;

use crate::error::{ExperimentError, InvalidExperiment};
use crate::fault::{Abort, Fault, FaultSpec, Latency, Percent};
use crate::target::Target;

/// The most faults one experiment may list.
pub const MAX_FAULTS: usize = 16;
/// The longest experiment name.
pub const MAX_NAME_LEN: usize = 63;

/// A fault-injection experiment; see the [module docs](self).
///
/// Build one with [`Experiment::builder`], or read one with
/// [`from_json`](Experiment::from_json) or serde.
///
/// ```
/// use std::time::Duration;
/// use watertight_chaos::{AbortWhen, Experiment, Fault, Latency, Target};
///
/// let exp = Experiment::builder("slow-zone-c")
///     .duration(Duration::from_secs(600))
///     .target(Target::all().zone("c"))
///     .fault(Fault::Latency(Latency::fixed(Duration::from_millis(200))), 10.0)
///     .abort_when(AbortWhen::error_rate_above(0.05))
///     .build()?;
/// assert_eq!(exp.faults[0].percent.ppm(), 100_000);
/// # Ok::<(), watertight_chaos::error::ExperimentError>(())
/// ```
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "wire::RawExperiment", into = "wire::RawExperiment")]
#[non_exhaustive]
pub struct Experiment {
    /// The name: 1 to 63 characters out of `A-Z a-z 0-9 . _ -`, not starting
    /// with `.`; unique among a controller's running experiments.
    pub name: String,
    /// The faults, 1 to 16.
    pub faults: Vec<FaultSpec>,
    /// The requests the faults may touch.
    pub target: Target,
    /// How long the experiment runs: its time to live. Required.
    pub duration: Duration,
    /// The steady-state guard that stops the experiment early.
    pub abort_when: Option<AbortWhen>,
}

/// A steady-state guard: stop the experiment when the traffic the layer
/// sees leaves its steady state.
///
/// Over the last `window` (once it holds `min_calls` calls), the
/// experiment is aborted when the share of failures exceeds
/// `error_rate_above`, or when the 99th-percentile latency exceeds
/// `p99_above`. Results are judged by the layer's
/// [`Classify`](watertight_core::Classify); injected faults count, since
/// they are part of what callers see.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct AbortWhen {
    /// Abort when the failure rate exceeds this fraction, in `(0, 1)`.
    pub error_rate_above: Option<f64>,
    /// Abort when the p99 latency exceeds this (more than zero).
    pub p99_above: Option<Duration>,
    /// The window both are measured over (default 30 s, at least 10 ms).
    pub window: Duration,
    /// The calls the window must hold before the guard judges (default 20,
    /// at least 1).
    pub min_calls: u64,
}

impl AbortWhen {
    /// The default window.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
    /// The default minimum of calls.
    pub const DEFAULT_MIN_CALLS: u64 = 20;

    fn empty() -> Self {
        AbortWhen {
            error_rate_above: None,
            p99_above: None,
            window: Self::DEFAULT_WINDOW,
            min_calls: Self::DEFAULT_MIN_CALLS,
        }
    }

    /// Abort when the failure rate exceeds `rate`.
    pub fn error_rate_above(rate: f64) -> Self {
        AbortWhen {
            error_rate_above: Some(rate),
            ..Self::empty()
        }
    }

    /// Abort when the p99 latency exceeds `p99`.
    pub fn p99_above(p99: Duration) -> Self {
        AbortWhen {
            p99_above: Some(p99),
            ..Self::empty()
        }
    }

    /// Also abort when the p99 latency exceeds `p99`.
    pub fn or_p99_above(mut self, p99: Duration) -> Self {
        self.p99_above = Some(p99);
        self
    }

    /// Also abort when the failure rate exceeds `rate`.
    pub fn or_error_rate_above(mut self, rate: f64) -> Self {
        self.error_rate_above = Some(rate);
        self
    }

    /// The window to measure over.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The calls the window must hold before the guard judges.
    pub fn min_calls(mut self, calls: u64) -> Self {
        self.min_calls = calls;
        self
    }

    fn validate(&self) -> Result<(), InvalidExperiment> {
        let err = |f: &str, r: &str| Err(InvalidExperiment::new(format!("abort_when.{f}"), r));
        if self.error_rate_above.is_none() && self.p99_above.is_none() {
            return err(
                "error_rate_above",
                "or `p99_above` is required: a guard needs a bound",
            );
        }
        if let Some(r) = self.error_rate_above {
            if !(r > 0.0 && r < 1.0) {
                return Err(InvalidExperiment::new(
                    "abort_when.error_rate_above",
                    format!("must be a fraction in (0, 1), got {r}"),
                ));
            }
        }
        if self.p99_above.is_some_and(|d| d.is_zero()) {
            return err("p99_above", "must be greater than zero");
        }
        if self.window < Duration::from_millis(10) {
            return err("window", "must be at least 10ms");
        }
        if self.min_calls == 0 {
            return err("min_calls", "must be at least 1");
        }
        Ok(())
    }
}

impl Experiment {
    /// A builder for an experiment named `name`.
    pub fn builder(name: impl Into<String>) -> ExperimentBuilder {
        ExperimentBuilder {
            name: name.into(),
            duration: None,
            faults: Vec::new(),
            target: Target::default(),
            abort_when: None,
            error: None,
        }
    }

    /// Reads an experiment from JSON.
    ///
    /// # Errors
    ///
    /// [`ExperimentError::UnknownFault`] for a fault `type` this crate does
    /// not know, and [`ExperimentError::Invalid`] naming the field for
    /// anything else (syntax, types, rules of [`validate`](Self::validate)).
    pub fn from_json(json: &[u8]) -> Result<Experiment, ExperimentError> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| InvalidExperiment::new(".", e.to_string()))?;
        Self::from_value(value)
    }

    /// Reads an experiment from TOML.
    ///
    /// # Errors
    ///
    /// As [`from_json`](Self::from_json).
    #[cfg(feature = "toml")]
    #[cfg_attr(docsrs, doc(cfg(feature = "toml")))]
    pub fn from_toml(text: &str) -> Result<Experiment, ExperimentError> {
        let value: serde_json::Value =
            toml::from_str(text).map_err(|e| InvalidExperiment::new(".", e.to_string()))?;
        Self::from_value(value)
    }

    /// Reads an experiment from a JSON value: checks that objects stand
    /// where objects belong (serde would read a struct from an array),
    /// then reads it naming the field of any error.
    fn from_value(value: serde_json::Value) -> Result<Experiment, ExperimentError> {
        check_shape(&value)?;
        let raw: wire::RawExperiment =
            serde_path_to_error::deserialize(value).map_err(path_error)?;
        raw.into_experiment()
    }

    /// The experiment as JSON, the form [`from_json`](Self::from_json)
    /// reads.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an experiment serializes")
    }

    /// Checks every rule (the controller checks them again on start):
    ///
    /// - `name`: 1 to 63 characters out of `A-Z a-z 0-9 . _ -`, not starting
    ///   with `.`;
    /// - `duration`: more than zero;
    /// - `faults`: 1 to 16; each fault's fields as the
    ///   [module docs](self) list them (delays and rates more than zero,
    ///   `min <= max`, `median <= p99`, HTTP status in `200..=599`, gRPC
    ///   status in `1..=16`), and no delay or unavailability longer than
    ///   the experiment's `duration`;
    /// - an `unavailable` fault acts before any request exists, so the
    ///   target may then name only endpoint locality and labels;
    /// - `target`: an upper-case method, a path prefix starting with `/`,
    ///   lower-case header names, non-empty label keys;
    /// - `abort_when`: at least one bound, `error_rate_above` in `(0, 1)`,
    ///   `p99_above` more than zero, `window` at least 10 ms and at most
    ///   the experiment's `duration`, `min_calls` at least 1.
    ///
    /// # Errors
    ///
    /// An [`InvalidExperiment`] naming the first field that breaks a rule.
    pub fn validate(&self) -> Result<(), InvalidExperiment> {
        validate_name(&self.name)?;
        if self.duration.is_zero() {
            return Err(InvalidExperiment::new(
                "duration",
                "must be greater than zero",
            ));
        }
        if self.faults.is_empty() {
            return Err(InvalidExperiment::new(
                "faults",
                "must list at least one fault",
            ));
        }
        if self.faults.len() > MAX_FAULTS {
            return Err(InvalidExperiment::new(
                "faults",
                format!("must list at most {MAX_FAULTS} faults"),
            ));
        }
        for (i, spec) in self.faults.iter().enumerate() {
            validate_fault(i, &spec.fault, self.duration)?;
            if matches!(spec.fault, Fault::Unavailable(_)) && self.target.has_request_matchers() {
                return Err(InvalidExperiment::new(
                    format!("faults[{i}].type"),
                    "`unavailable` acts in poll_ready, before any request exists: \
                     its experiment's target may name only region, zone, subzone and labels",
                ));
            }
        }
        self.target
            .validate()
            .map_err(|(f, r)| InvalidExperiment::new(f, r))?;
        if let Some(g) = &self.abort_when {
            g.validate()?;
            if g.window > self.duration {
                return Err(InvalidExperiment::new(
                    "abort_when.window",
                    "must not exceed the experiment's `duration`",
                ));
            }
        }
        Ok(())
    }
}

fn check_shape(value: &serde_json::Value) -> Result<(), InvalidExperiment> {
    use serde_json::Value;
    let object = |v: Option<&Value>, field: &str| match v {
        None | Some(Value::Null | Value::Object(_)) => Ok(()),
        Some(_) => Err(InvalidExperiment::new(field, "must be an object")),
    };
    let Value::Object(top) = value else {
        return Err(InvalidExperiment::new(
            ".",
            "an experiment must be an object",
        ));
    };
    object(top.get("target"), "target")?;
    object(top.get("abort_when"), "abort_when")?;
    if let Some(Value::Array(faults)) = top.get("faults") {
        for (i, f) in faults.iter().enumerate() {
            if !f.is_object() {
                return Err(InvalidExperiment::new(
                    format!("faults[{i}]"),
                    "must be an object with a `type`",
                ));
            }
        }
    }
    Ok(())
}

fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> ExperimentError {
    let mut path = e.path().to_string();
    if path == "?" {
        // A syntax error before any field.
        path = ".".to_owned();
    }
    let inner = e.into_inner().to_string();
    InvalidExperiment::new(path, inner).into()
}

fn validate_name(name: &str) -> Result<(), InvalidExperiment> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(InvalidExperiment::new(
            "name",
            format!(
                "must be 1 to {MAX_NAME_LEN} characters out of `A-Z a-z 0-9 . _ -`, \
                 not starting with `.`, got {name:?}"
            ),
        ))
    }
}

fn validate_fault(i: usize, fault: &Fault, limit: Duration) -> Result<(), InvalidExperiment> {
    let err = |f: &str, r: String| Err(InvalidExperiment::new(format!("faults[{i}].{f}"), r));
    // No fault outlives its experiment.
    let within = |f: &str, d: Duration| {
        if d > limit {
            err(f, "must not exceed the experiment's `duration`".to_owned())
        } else {
            Ok(())
        }
    };
    let positive = |f: &str, d: Duration| {
        if d.is_zero() {
            err(f, "must be greater than zero".to_owned())
        } else {
            within(f, d)
        }
    };
    match fault {
        Fault::Latency(Latency::Fixed(d)) => positive("fixed", *d),
        Fault::Latency(Latency::Uniform { min, max }) => {
            positive("max", *max)?;
            within("min", *min)?;
            if min > max {
                return err("min", "must not exceed `max`".to_owned());
            }
            Ok(())
        }
        Fault::Latency(Latency::LogNormal { median, p99, max }) => {
            positive("median", *median)?;
            within("p99", *p99)?;
            if p99 < median {
                return err("p99", "must not be less than `median`".to_owned());
            }
            if let Some(m) = max {
                within("max", *m)?;
                if m < median {
                    return err("max", "must not be less than `median`".to_owned());
                }
            }
            Ok(())
        }
        Fault::Abort(Abort::Http(s)) if !(200..=599).contains(s) => err(
            "status",
            format!("must be an HTTP status in 200..=599, got {s}"),
        ),
        Fault::Abort(Abort::Grpc(s)) if !(1..=16).contains(s) => err(
            "grpc_status",
            format!("must be a gRPC status code in 1..=16, got {s}"),
        ),
        Fault::Abort(_) | Fault::Hang => Ok(()),
        Fault::Unavailable(d) => positive("duration", *d),
        Fault::Throttle { bytes_per_second } if *bytes_per_second == 0 => {
            err("bytes_per_second", "must be at least 1".to_owned())
        }
        Fault::Throttle { .. } | Fault::Truncate { .. } => Ok(()),
    }
}

/// Builds an [`Experiment`]. Setters never fail;
/// [`build`](Self::build) validates.
#[derive(Clone, Debug)]
pub struct ExperimentBuilder {
    name: String,
    duration: Option<Duration>,
    faults: Vec<FaultSpec>,
    target: Target,
    abort_when: Option<AbortWhen>,
    error: Option<InvalidExperiment>,
}

impl ExperimentBuilder {
    /// How long the experiment runs. Required.
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = Some(duration);
        self
    }

    /// Adds `fault`, firing on `percent` (`0`–`100`, resolution one in a
    /// million) of the targeted requests.
    pub fn fault(mut self, fault: Fault, percent: f64) -> Self {
        match Percent::new(percent) {
            Ok(p) => self.faults.push(FaultSpec::new(fault, p)),
            Err(reason) => {
                let field = format!("faults[{}].percent", self.faults.len());
                self.error
                    .get_or_insert(InvalidExperiment::new(field, reason));
            }
        }
        self
    }

    /// The requests the faults may touch (default: every request).
    pub fn target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// The steady-state guard.
    pub fn abort_when(mut self, guard: AbortWhen) -> Self {
        self.abort_when = Some(guard);
        self
    }

    /// Validates and builds; see [`Experiment::validate`].
    ///
    /// # Errors
    ///
    /// An [`ExperimentError::Invalid`] naming the first field at fault
    /// (`duration` when it was not set).
    pub fn build(self) -> Result<Experiment, ExperimentError> {
        if let Some(e) = self.error {
            return Err(e.into());
        }
        let duration = self
            .duration
            .ok_or_else(|| InvalidExperiment::new("duration", "is required"))?;
        let exp = Experiment {
            name: self.name,
            faults: self.faults,
            target: self.target,
            duration,
            abort_when: self.abort_when,
        };
        exp.validate()?;
        Ok(exp)
    }
}

pub(crate) mod wire {
    //! The document form: every field optional on the way in, so a missing
    //! one is reported by name, then checked per fault type.

    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    use super::{AbortWhen, Experiment};
    use crate::error::{ExperimentError, InvalidExperiment, UnknownFault};
    use crate::fault::{Abort, Fault, FaultSpec, Latency, Percent, FAULT_TYPES};
    use crate::target::Target;

    #[derive(Default, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawExperiment {
        #[serde(default)]
        name: Option<String>,
        #[serde(default, with = "humantime_serde")]
        duration: Option<Duration>,
        #[serde(default, skip_serializing_if = "matches_all")]
        target: Target,
        #[serde(default)]
        faults: Option<Vec<RawFault>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        abort_when: Option<RawAbortWhen>,
    }

    fn matches_all(target: &Target) -> bool {
        *target == Target::all()
    }

    #[derive(Default, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawFault {
        #[serde(rename = "type", default)]
        pub(crate) kind: Option<String>,
        #[serde(default)]
        pub(crate) percent: Option<f64>,
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        pub(crate) fixed: Option<Duration>,
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        pub(crate) min: Option<Duration>,
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        pub(crate) max: Option<Duration>,
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        pub(crate) median: Option<Duration>,
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        pub(crate) p99: Option<Duration>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) status: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) grpc_status: Option<u16>,
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        pub(crate) duration: Option<Duration>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) bytes_per_second: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) after_bytes: Option<u64>,
    }

    #[derive(Default, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct RawAbortWhen {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error_rate_above: Option<f64>,
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        p99_above: Option<Duration>,
        #[serde(default, with = "humantime_serde")]
        window: Option<Duration>,
        #[serde(default)]
        min_calls: Option<u64>,
    }

    impl RawFault {
        /// The fields set, by name, in declaration order.
        fn set_fields(&self) -> Vec<&'static str> {
            let mut set = Vec::new();
            let mut add = |name, present: bool| {
                if present {
                    set.push(name);
                }
            };
            add("fixed", self.fixed.is_some());
            add("min", self.min.is_some());
            add("max", self.max.is_some());
            add("median", self.median.is_some());
            add("p99", self.p99.is_some());
            add("status", self.status.is_some());
            add("grpc_status", self.grpc_status.is_some());
            add("duration", self.duration.is_some());
            add("bytes_per_second", self.bytes_per_second.is_some());
            add("after_bytes", self.after_bytes.is_some());
            set
        }

        pub(crate) fn into_spec(self, i: usize) -> Result<FaultSpec, ExperimentError> {
            let field = |f: &str| format!("faults[{i}].{f}");
            let kind = self
                .kind
                .clone()
                .ok_or_else(|| InvalidExperiment::new(field("type"), "is required"))?;
            if !FAULT_TYPES.contains(&kind.as_str()) {
                return Err(UnknownFault::new(field("type"), kind).into());
            }
            let percent = self
                .percent
                .ok_or_else(|| InvalidExperiment::new(field("percent"), "is required"))?;
            let percent =
                Percent::new(percent).map_err(|r| InvalidExperiment::new(field("percent"), r))?;
            let allowed: &[&str] = match kind.as_str() {
                "latency" => &["fixed", "min", "max", "median", "p99"],
                "abort" => &["status", "grpc_status"],
                "unavailable" => &["duration"],
                "throttle" => &["bytes_per_second"],
                "truncate" => &["after_bytes"],
                _ => &[],
            };
            if let Some(extra) = self.set_fields().into_iter().find(|f| !allowed.contains(f)) {
                return Err(InvalidExperiment::new(
                    field(extra),
                    format!("does not apply to a `{kind}` fault"),
                )
                .into());
            }
            let required = |v: Option<u64>, f: &str| {
                v.ok_or_else(|| InvalidExperiment::new(field(f), "is required"))
            };
            let fault = match kind.as_str() {
                "latency" => Fault::Latency(self.latency(i)?),
                "abort" => match (self.status, self.grpc_status) {
                    (Some(_), Some(_)) => {
                        return Err(InvalidExperiment::new(
                            field("grpc_status"),
                            "must not be set together with `status`",
                        )
                        .into())
                    }
                    (Some(s), None) => Fault::Abort(Abort::Http(s)),
                    (None, Some(g)) => Fault::Abort(Abort::Grpc(g)),
                    (None, None) => Fault::Abort(Abort::Error),
                },
                "hang" => Fault::Hang,
                "unavailable" => Fault::Unavailable(
                    self.duration
                        .ok_or_else(|| InvalidExperiment::new(field("duration"), "is required"))?,
                ),
                "throttle" => Fault::Throttle {
                    bytes_per_second: required(self.bytes_per_second, "bytes_per_second")?,
                },
                _ => Fault::Truncate {
                    after_bytes: required(self.after_bytes, "after_bytes")?,
                },
            };
            Ok(FaultSpec::new(fault, percent))
        }

        fn latency(&self, i: usize) -> Result<Latency, InvalidExperiment> {
            let field = |f: &str| format!("faults[{i}].{f}");
            match (self.fixed, self.min, self.max, self.median, self.p99) {
                (Some(d), None, None, None, None) => Ok(Latency::Fixed(d)),
                (None, Some(min), Some(max), None, None) => Ok(Latency::Uniform { min, max }),
                (None, None, max, Some(median), Some(p99)) => {
                    Ok(Latency::LogNormal { median, p99, max })
                }
                (None, None, None, None, None) => Err(InvalidExperiment::new(
                    field("fixed"),
                    "is required, or `min` and `max`, or `median` and `p99`",
                )),
                (Some(_), ..) => Err(InvalidExperiment::new(
                    field("fixed"),
                    "must not be set together with `min`, `max`, `median` or `p99`",
                )),
                (None, Some(_), None, ..) => Err(InvalidExperiment::new(
                    field("max"),
                    "is required with `min`",
                )),
                (None, Some(_), Some(_), ..) => Err(InvalidExperiment::new(
                    field("min"),
                    "must not be set together with `median` or `p99`",
                )),
                (None, None, _, Some(_), None) => Err(InvalidExperiment::new(
                    field("p99"),
                    "is required with `median`",
                )),
                (None, None, _, None, Some(_)) => Err(InvalidExperiment::new(
                    field("median"),
                    "is required with `p99`",
                )),
                (None, None, Some(_), None, None) => Err(InvalidExperiment::new(
                    field("min"),
                    "is required with `max`",
                )),
            }
        }

        fn from_spec(spec: &FaultSpec) -> RawFault {
            let mut raw = RawFault {
                kind: Some(spec.fault.type_name().to_owned()),
                percent: Some(spec.percent.as_percent()),
                ..RawFault::default()
            };
            match &spec.fault {
                Fault::Latency(Latency::Fixed(d)) => raw.fixed = Some(*d),
                Fault::Latency(Latency::Uniform { min, max }) => {
                    raw.min = Some(*min);
                    raw.max = Some(*max);
                }
                Fault::Latency(Latency::LogNormal { median, p99, max }) => {
                    raw.median = Some(*median);
                    raw.p99 = Some(*p99);
                    raw.max = *max;
                }
                Fault::Abort(Abort::Error) | Fault::Hang => {}
                Fault::Abort(Abort::Http(s)) => raw.status = Some(*s),
                Fault::Abort(Abort::Grpc(s)) => raw.grpc_status = Some(*s),
                Fault::Unavailable(d) => raw.duration = Some(*d),
                Fault::Throttle { bytes_per_second } => {
                    raw.bytes_per_second = Some(*bytes_per_second)
                }
                Fault::Truncate { after_bytes } => raw.after_bytes = Some(*after_bytes),
            }
            raw
        }
    }

    impl RawExperiment {
        pub(crate) fn into_experiment(self) -> Result<Experiment, ExperimentError> {
            let name = self
                .name
                .ok_or_else(|| InvalidExperiment::new("name", "is required"))?;
            let duration = self
                .duration
                .ok_or_else(|| InvalidExperiment::new("duration", "is required"))?;
            let raw_faults = self
                .faults
                .ok_or_else(|| InvalidExperiment::new("faults", "is required"))?;
            let mut faults = Vec::with_capacity(raw_faults.len());
            for (i, f) in raw_faults.into_iter().enumerate() {
                faults.push(f.into_spec(i)?);
            }
            let abort_when = self.abort_when.map(|g| AbortWhen {
                error_rate_above: g.error_rate_above,
                p99_above: g.p99_above,
                window: g.window.unwrap_or(AbortWhen::DEFAULT_WINDOW),
                min_calls: g.min_calls.unwrap_or(AbortWhen::DEFAULT_MIN_CALLS),
            });
            let exp = Experiment {
                name,
                faults,
                target: self.target,
                duration,
                abort_when,
            };
            exp.validate()?;
            Ok(exp)
        }
    }

    impl TryFrom<RawExperiment> for Experiment {
        type Error = ExperimentError;

        fn try_from(raw: RawExperiment) -> Result<Self, ExperimentError> {
            raw.into_experiment()
        }
    }

    impl From<Experiment> for RawExperiment {
        fn from(e: Experiment) -> Self {
            RawExperiment {
                name: Some(e.name),
                duration: Some(e.duration),
                target: e.target,
                faults: Some(e.faults.iter().map(RawFault::from_spec).collect()),
                abort_when: e.abort_when.map(|g| RawAbortWhen {
                    error_rate_above: g.error_rate_above,
                    p99_above: g.p99_above,
                    window: Some(g.window),
                    min_calls: Some(g.min_calls),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ExperimentError;

    fn field_of(json: &str) -> String {
        Experiment::from_json(json.as_bytes())
            .unwrap_err()
            .field()
            .to_owned()
    }

    #[test]
    fn json_round_trips() {
        let json = r#"{
            "name": "e1", "duration": "10m",
            "target": {"path_prefix": "/api", "zone": "c", "headers": {"x-a": "1"}, "labels": {"v": "2"}},
            "faults": [
                {"type": "latency", "percent": 10, "median": "80ms", "p99": "400ms", "max": "2s"},
                {"type": "latency", "percent": 1.5, "min": "1ms", "max": "5ms"},
                {"type": "abort", "percent": 0.0001, "status": 503},
                {"type": "abort", "percent": 1, "grpc_status": 14},
                {"type": "abort", "percent": 1},
                {"type": "hang", "percent": 1},
                {"type": "throttle", "percent": 100, "bytes_per_second": 10},
                {"type": "truncate", "percent": 100, "after_bytes": 0}
            ],
            "abort_when": {"error_rate_above": 0.05}
        }"#;
        let exp = Experiment::from_json(json.as_bytes()).unwrap();
        assert_eq!(exp.faults[2].percent.ppm(), 1);
        assert_eq!(
            exp.abort_when.as_ref().unwrap().window,
            Duration::from_secs(30)
        );
        let again = Experiment::from_json(exp.to_json().as_bytes()).unwrap();
        assert_eq!(again, exp);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(r#"{"duration": "1m", "faults": []}"#), "name");
        assert_eq!(field_of(r#"{"name": "a", "faults": []}"#), "duration");
        assert_eq!(field_of(r#"{"name": "a", "duration": "1m"}"#), "faults");
        assert_eq!(
            field_of(r#"{"name": "a", "duration": "1m", "faults": []}"#),
            "faults"
        );
        assert_eq!(
            field_of(
                r#"{"name": "a b", "duration": "1m", "faults": [{"type": "hang", "percent": 1}]}"#
            ),
            "name"
        );
        assert_eq!(
            field_of(r#"{"name": "a", "duration": "soon", "faults": []}"#),
            "duration"
        );
        assert_eq!(
            field_of(r#"{"name": "a", "duration": "1m", "faults": [{"type": "hang"}]}"#),
            "faults[0].percent"
        );
        assert_eq!(
            field_of(
                r#"{"name": "a", "duration": "1m", "faults": [{"type": "hang", "percent": 101}]}"#
            ),
            "faults[0].percent"
        );
        assert_eq!(
            field_of(
                r#"{"name": "a", "duration": "1m", "faults": [{"type": "hang", "percent": 1, "status": 500}]}"#
            ),
            "faults[0].status"
        );
        assert_eq!(
            field_of(
                r#"{"name": "a", "duration": "1m", "faults": [{"type": "abort", "percent": 1, "status": 700}]}"#
            ),
            "faults[0].status"
        );
        assert_eq!(
            field_of(
                r#"{"name": "a", "duration": "1m", "faults": [{"type": "latency", "percent": 1, "min": "2s", "max": "1s"}]}"#
            ),
            "faults[0].min"
        );
        assert_eq!(
            field_of(
                r#"{"name": "a", "duration": "1m", "faults": [{"type": "latency", "percent": 1}]}"#
            ),
            "faults[0].fixed"
        );
        assert_eq!(
            field_of(
                r#"{"name": "a", "duration": "1m", "faults": [{"type": "hang", "percent": 1}], "abort_when": {}}"#
            ),
            "abort_when.error_rate_above"
        );
        assert_eq!(
            field_of(
                r#"{"name": "a", "duration": "1m", "faults": [{"type": "hang", "percent": 1}], "target": {"method": "get"}}"#
            ),
            "target.method"
        );
        assert_eq!(
            field_of(
                r#"{"name": "a", "duration": "1m", "faults": [{"type": "hang", "percent": 1}], "target": {"zone": "c", "colour": "red"}}"#
            ),
            "target.colour"
        );
        assert_eq!(
            field_of(
                r#"{"name": "a", "duration": "1m", "faults": [{"type": "hang", "percent": 1}], "target": {"labels": {"v": 2}}}"#
            ),
            "target.labels.v"
        );
        assert_eq!(
            field_of(
                r#"{"name": "a", "duration": "1m", "faults": [{"type": "unavailable", "percent": 1, "duration": "1s"}], "target": {"path_prefix": "/"}}"#
            ),
            "faults[0].type"
        );
        assert_eq!(field_of("{"), ".");
        assert_eq!(
            field_of(
                r#"{"name": "a", "duration": "1m", "faults": [{"type": "latency", "percent": 1, "fixed": "2m"}]}"#
            ),
            "faults[0].fixed"
        );
        assert_eq!(
            field_of(
                r#"{"name": "a", "duration": "1m", "faults": [{"type": "unavailable", "percent": 1, "duration": "99999999h"}]}"#
            ),
            "faults[0].duration"
        );
        assert_eq!(
            field_of(
                r#"{"name": "a", "duration": "1m", "faults": [{"type": "hang", "percent": 1}], "abort_when": {"error_rate_above": 0.1, "window": "2m"}}"#
            ),
            "abort_when.window"
        );
    }

    #[test]
    fn unknown_fault_type_is_its_own_error() {
        let err = Experiment::from_json(
            br#"{"name": "a", "duration": "1m", "faults": [{"type": "hang", "percent": 1}, {"type": "explode", "percent": 1}]}"#,
        )
        .unwrap_err();
        match err {
            ExperimentError::UnknownFault(u) => {
                assert_eq!(u.field(), "faults[1].type");
                assert_eq!(u.fault_type(), "explode");
            }
            other => panic!("expected an unknown fault, got {other:?}"),
        }
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = Experiment::from_json(
            br#"{"name": "a", "duration": "1m", "faults": [{"type": "hang", "percent": 1, "colour": "red"}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.field(), "faults[0].colour", "{err}");
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn builder_requires_a_duration_and_names_bad_percentages() {
        let err = Experiment::builder("a")
            .fault(Fault::Hang, 1.0)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "duration");
        let err = Experiment::builder("a")
            .duration(Duration::from_secs(1))
            .fault(Fault::Hang, 1.0)
            .fault(Fault::Hang, 0.000_01)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "faults[1].percent");
    }
}

#[cfg(all(test, feature = "toml"))]
mod toml_tests {
    use super::*;

    #[test]
    fn toml_reads_the_same_form_and_names_fields() {
        let exp = Experiment::from_toml(
            r#"
            name = "t"
            duration = "5m"
            [target]
            zone = "c"
            [[faults]]
            type = "abort"
            percent = 5
            status = 503
            [[faults]]
            type = "latency"
            percent = 0.5
            fixed = "20ms"
            "#,
        )
        .unwrap();
        assert_eq!(exp.faults[0].percent.ppm(), 50_000);
        assert_eq!(exp.target.zone.as_deref(), Some("c"));
        let err = Experiment::from_toml(
            "name = \"t\"\nduration = \"5m\"\n[[faults]]\ntype = \"abort\"\npercent = \"lots\"\n",
        )
        .unwrap_err();
        assert_eq!(err.field(), "faults[0].percent", "{err}");
        let err = Experiment::from_toml("name = \"t\"\nduration = \"5m\"\n[[faults]]\ntype = \"abort\"\npercent = 1\ncolour = 1\n").unwrap_err();
        assert_eq!(err.field(), "faults[0].colour", "{err}");
        let err = Experiment::from_toml("name = ").unwrap_err();
        assert_eq!(err.field(), ".");
    }
}
