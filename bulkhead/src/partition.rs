//! [`PartitionedBulkhead`](crate::PartitionedBulkhead)'s configuration,
//! partitioner, shared state and handle.
//!
//! # Algorithm
//!
//! Netflix concurrency-limits' partitioned limiter: the total limit is
//! divided into partitions (tenants, routes, traffic classes) by a key read
//! from each request, each guaranteed `⌈limit × share⌉` and allowed to borrow
//! whatever the others leave idle. A request is rejected only when the total
//! is at its limit *and* its partition is at its guarantee, so a busy
//! partition uses spare capacity and an idle one gets its share back as soon
//! as it needs it (the total overshoots meanwhile, by at most the sum of the
//! guarantees). Requests whose key names no partition share the borrowing
//! path only.
//!
//! On top, criticality-aware shedding, after Google's servers ("Handling
//! Overload", *Site Reliability Engineering*, ch. 21): a request carrying
//! [`Criticality`] `c` counts only `⌈fraction(c) × bound⌉` of both bounds.
//! With the defaults (`sheddable` 0.8, `default` 0.9, `critical` 1.0),
//! sheddable requests are turned away once the bulkhead is 80% busy,
//! ordinary ones at 90%, and the last tenth is kept for critical requests.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Label};
use watertight_core::config;

use crate::criticality::Criticality;
use crate::error::check::{self, COMPONENT};
use crate::error::{ConfigError, Full, Reason};
use crate::event::{Cause, Event, LimitChanged, Listener, Rejected};
use crate::gate::{Gate, Refusal};
use crate::layer::PartitionedBulkheadLayer;
use crate::limiter::TARGET;

/// Reads the partition key of a request: the name of a partition, or
/// `None`. Implemented by every `Fn(&Req) -> Option<&str>` that returns a
/// string borrowed from the request or `'static`.
pub trait Partitioner<Req> {
    /// The request's partition name.
    fn partition<'r>(&self, req: &'r Req) -> Option<&'r str>;
}

impl<Req, F> Partitioner<Req> for F
where
    F: for<'r> Fn(&'r Req) -> Option<&'r str>,
{
    fn partition<'r>(&self, req: &'r Req) -> Option<&'r str> {
        self(req)
    }
}

/// The partitioner of a bulkhead without partitions: every request borrows
/// from the shared total (criticality shedding still applies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unpartitioned;

impl<Req> Partitioner<Req> for Unpartitioned {
    fn partition<'r>(&self, _: &'r Req) -> Option<&'r str> {
        None
    }
}

/// One partition: its name and its guaranteed share of the limit.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Partition {
    /// The key requests of this partition carry; unique, not empty.
    pub name: String,
    /// The guaranteed share, in `(0, 1]`; the shares add up to at most 1.
    pub share: f64,
}

impl Partition {
    /// A partition named `name` guaranteed `share` of the limit.
    pub fn new(name: impl Into<String>, share: f64) -> Self {
        Partition {
            name: name.into(),
            share,
        }
    }
}

/// A [`PartitionedBulkhead`](crate::PartitionedBulkhead)'s configuration.
///
/// | field | default |
/// |---|---|
/// | `name` | `"partitioned_bulkhead"` |
/// | `limit` | 100 |
/// | `partitions` | none (every request borrows) |
/// | `sheddable_fraction` | 0.8 |
/// | `default_fraction` | 0.9 |
/// | `retry_after` | 1 s |
///
/// Critical requests may use the whole limit. With feature `serde` (TOML
/// shown, every field optional), validated on the way in:
///
/// ```toml
/// name = "api"
/// limit = 200
/// sheddable_fraction = 0.75
/// default_fraction = 0.9
/// partitions = [
///     { name = "interactive", share = 0.7 },
///     { name = "batch", share = 0.2 },
/// ]
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct PartitionedConfig {
    /// The instance name: the `name` label of its metrics. Not empty.
    pub name: String,
    /// The total limit, `1..=2^30`; changes at run time through
    /// [`PartitionedHandle::resize`].
    pub limit: u32,
    /// The partitions.
    pub partitions: Vec<Partition>,
    /// The share of each bound a [`Criticality::Sheddable`] request may
    /// use, in `(0, 1]`, at most `default_fraction`.
    pub sheddable_fraction: f64,
    /// The share of each bound a [`Criticality::Default`] request may use,
    /// in `(0, 1]`.
    pub default_fraction: f64,
    /// The hint rejections carry.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub retry_after: Duration,
}

impl Default for PartitionedConfig {
    fn default() -> Self {
        PartitionedConfig {
            name: "partitioned_bulkhead".to_owned(),
            limit: 100,
            partitions: Vec::new(),
            sheddable_fraction: 0.8,
            default_fraction: 0.9,
            retry_after: Duration::from_secs(1),
        }
    }
}

impl PartitionedConfig {
    /// Checks every rule: the name is not empty; `limit` is in `1..=2^30`;
    /// partition names are unique and not empty; each share is in `(0, 1]`
    /// and they add up to at most 1; both fractions are in `(0, 1]` and
    /// `sheddable_fraction <= default_fraction`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that breaks a rule
    /// (`partitions[1].share` for a partition's).
    pub fn validate(&self) -> Result<(), ConfigError> {
        config::name(COMPONENT, &self.name)?;
        check::limit("limit", self.limit)?;
        let mut sum = 0.0;
        for (i, p) in self.partitions.iter().enumerate() {
            if p.name.is_empty() {
                return Err(check::invalid(
                    format!("partitions[{i}].name"),
                    "must not be empty",
                ));
            }
            if self.partitions[..i].iter().any(|q| q.name == p.name) {
                return Err(check::invalid(
                    format!("partitions[{i}].name"),
                    format!("must be unique; {:?} appears twice", p.name),
                ));
            }
            config::fraction(COMPONENT, "share", p.share)
                .map_err(|e| e.within(COMPONENT, &format!("partitions[{i}]")))?;
            sum += p.share;
        }
        if sum > 1.0 + 1e-9 {
            return Err(check::invalid(
                "partitions",
                format!("shares must add up to at most 1, got {sum}"),
            ));
        }
        config::fraction(COMPONENT, "sheddable_fraction", self.sheddable_fraction)?;
        config::fraction(COMPONENT, "default_fraction", self.default_fraction)?;
        if self.sheddable_fraction > self.default_fraction {
            return Err(check::invalid(
                "sheddable_fraction",
                format!(
                    "must not exceed `default_fraction` ({}), got {}",
                    self.default_fraction, self.sheddable_fraction
                ),
            ));
        }
        Ok(())
    }
}

validated_serde!(PartitionedConfig);

/// Builds a [`PartitionedBulkheadLayer`]; see [`PartitionedConfig`] for
/// every field and its default.
pub struct PartitionedBuilder<P = Unpartitioned> {
    config: PartitionedConfig,
    partitioner: P,
    listener: Option<Listener>,
}

impl<P: fmt::Debug> fmt::Debug for PartitionedBuilder<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionedBuilder")
            .field("config", &self.config)
            .field("partitioner", &self.partitioner)
            .field("on_event", &self.listener.is_some())
            .finish()
    }
}

impl Default for PartitionedBuilder {
    fn default() -> Self {
        PartitionedBuilder::new()
    }
}

impl PartitionedBuilder {
    /// A builder with the defaults of [`PartitionedConfig`] and no
    /// partitioner ([`Unpartitioned`]).
    pub fn new() -> Self {
        PartitionedBuilder {
            config: PartitionedConfig::default(),
            partitioner: Unpartitioned,
            listener: None,
        }
    }
}

impl<P> PartitionedBuilder<P> {
    /// Starts from `config` instead of the defaults (later setters still
    /// apply).
    pub fn config(mut self, config: PartitionedConfig) -> Self {
        self.config = config;
        self
    }

    /// The instance name (default `partitioned_bulkhead`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// The total limit (default 100).
    pub fn limit(mut self, limit: u32) -> Self {
        self.config.limit = limit;
        self
    }

    /// Adds a partition guaranteed `share` of the limit.
    pub fn partition(mut self, name: impl Into<String>, share: f64) -> Self {
        self.config.partitions.push(Partition::new(name, share));
        self
    }

    /// How a request's partition is read: a closure returning the partition
    /// name (borrowed from the request, or `'static`), or `None`.
    ///
    /// ```
    /// use watertight_bulkhead::PartitionedBulkheadLayer;
    ///
    /// struct Job { tenant: String }
    ///
    /// let layer = PartitionedBulkheadLayer::builder()
    ///     .limit(10)
    ///     .partition("acme", 0.5)
    ///     .partition_by(|job: &Job| Some(job.tenant.as_str()))
    ///     .build()?;
    /// # Ok::<(), watertight_bulkhead::error::ConfigError>(())
    /// ```
    pub fn partition_by<Req, F>(self, partitioner: F) -> PartitionedBuilder<F>
    where
        F: for<'r> Fn(&'r Req) -> Option<&'r str>,
    {
        PartitionedBuilder {
            config: self.config,
            partitioner,
            listener: self.listener,
        }
    }

    /// A [`Partitioner`] that is not a closure.
    pub fn partitioner<P2>(self, partitioner: P2) -> PartitionedBuilder<P2> {
        PartitionedBuilder {
            config: self.config,
            partitioner,
            listener: self.listener,
        }
    }

    /// The share of each bound a sheddable request may use (default 0.8).
    pub fn sheddable_fraction(mut self, fraction: f64) -> Self {
        self.config.sheddable_fraction = fraction;
        self
    }

    /// The share of each bound a request of default criticality may use
    /// (default 0.9).
    pub fn default_fraction(mut self, fraction: f64) -> Self {
        self.config.default_fraction = fraction;
        self
    }

    /// The hint rejections carry (default 1 s).
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.config.retry_after = retry_after;
        self
    }

    /// Calls `listener` with every [`Event`]; see [`event`](crate::event).
    pub fn on_event<F>(mut self, listener: F) -> Self
    where
        F: Fn(&Event) + Send + Sync + 'static,
    {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Validates the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field; see
    /// [`PartitionedConfig::validate`].
    pub fn build(self) -> Result<PartitionedBulkheadLayer<P>, ConfigError> {
        self.config.validate()?;
        Ok(PartitionedBulkheadLayer::from_parts(
            self.config,
            self.partitioner,
            self.listener,
        ))
    }
}

struct PartMetrics {
    in_flight: Gauge,
    admitted: Counter,
    at_limit: Counter,
    shed: Counter,
}

/// A partition's state beside the gate.
struct PartState {
    name: Arc<str>,
    admitted: AtomicU64,
    rejected: AtomicU64,
    shed: AtomicU64,
    metrics: PartMetrics,
}

/// The name of the partition of requests whose key names none.
pub(crate) const UNMATCHED: &str = "(unmatched)";

/// Everything one partitioned bulkhead's services, futures and handles
/// share.
pub(crate) struct Partitions {
    pub(crate) gate: Gate,
    parts: Box<[PartState]>,
    pub(crate) name: Arc<str>,
    retry_after: Duration,
    limit_gauge: Gauge,
    listener: Option<Listener>,
}

impl fmt::Debug for Partitions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partitions")
            .field("name", &self.name)
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

impl Partitions {
    pub(crate) fn new(config: &PartitionedConfig, listener: Option<Listener>) -> Self {
        let mut shares: Vec<f64> = config.partitions.iter().map(|p| p.share).collect();
        shares.push(0.0);
        let names = config
            .partitions
            .iter()
            .map(|p| p.name.as_str())
            .chain(std::iter::once(UNMATCHED));
        let label = |n: &str| {
            vec![
                Label::new("name", config.name.clone()),
                Label::new("partition", n.to_owned()),
            ]
        };
        let parts = names
            .map(|n| {
                let rejected = |reason: &'static str| {
                    let mut l = label(n);
                    l.push(Label::new("reason", reason));
                    metrics::counter!("watertight_partitioned_bulkhead_rejected_total", l)
                };
                let metrics = PartMetrics {
                    in_flight: metrics::gauge!(
                        "watertight_partitioned_bulkhead_in_flight",
                        label(n)
                    ),
                    admitted: metrics::counter!(
                        "watertight_partitioned_bulkhead_admitted_total",
                        label(n)
                    ),
                    at_limit: rejected(Reason::AtLimit.as_str()),
                    shed: rejected("shed"),
                };
                metrics.in_flight.set(0.0);
                PartState {
                    name: Arc::from(n),
                    admitted: AtomicU64::new(0),
                    rejected: AtomicU64::new(0),
                    shed: AtomicU64::new(0),
                    metrics,
                }
            })
            .collect();
        let limit_gauge = metrics::gauge!(
            "watertight_partitioned_bulkhead_limit",
            vec![Label::new("name", config.name.clone())]
        );
        limit_gauge.set(f64::from(config.limit));
        Partitions {
            gate: Gate::new(
                config.limit,
                &shares,
                [config.sheddable_fraction, config.default_fraction, 1.0],
            ),
            parts,
            name: Arc::from(config.name.as_str()),
            retry_after: config.retry_after,
            limit_gauge,
            listener,
        }
    }

    /// The index of the partition named `key`, or of the unmatched one.
    #[inline]
    pub(crate) fn index(&self, key: Option<&str>) -> usize {
        let unmatched = self.parts.len() - 1;
        match key {
            Some(k) => self.parts[..unmatched]
                .iter()
                .position(|p| &*p.name == k)
                .unwrap_or(unmatched),
            None => unmatched,
        }
    }

    #[inline]
    pub(crate) fn acquire(
        self: &Arc<Self>,
        part: usize,
        criticality: Criticality,
    ) -> Result<PartitionPermit, Full> {
        match self.gate.try_acquire(part, criticality.index()) {
            Ok(()) => {
                let p = &self.parts[part];
                p.admitted.fetch_add(1, Relaxed);
                p.metrics.admitted.increment(1);
                p.metrics.in_flight.increment(1.0);
                Ok(PartitionPermit {
                    partitions: self.clone(),
                    part,
                })
            }
            Err(refusal) => Err(self.reject(part, criticality, refusal)),
        }
    }

    #[cold]
    fn reject(&self, part: usize, criticality: Criticality, refusal: Refusal) -> Full {
        let p = &self.parts[part];
        p.rejected.fetch_add(1, Relaxed);
        let reason = match refusal {
            Refusal::Shed => {
                p.shed.fetch_add(1, Relaxed);
                p.metrics.shed.increment(1);
                Reason::Shed(criticality)
            }
            Refusal::AtLimit => {
                p.metrics.at_limit.increment(1);
                Reason::AtLimit
            }
        };
        let limit = self.gate.limit();
        tracing::trace!(target: TARGET, name = %self.name, partition = %p.name, %reason, "rejected");
        if let Some(l) = &self.listener {
            l(&Event::Rejected(Rejected {
                name: self.name.clone(),
                partition: Some(p.name.clone()),
                reason,
                limit,
            }));
        }
        Full::new(reason, limit, Duration::ZERO, self.retry_after)
    }

    fn release(&self, part: usize) {
        self.gate.release(part);
        self.parts[part].metrics.in_flight.decrement(1.0);
    }

    /// Sets the total limit, reporting a change.
    fn resize(&self, to: u32) {
        let from = self.gate.set_limit(to);
        if from == to {
            return;
        }
        self.limit_gauge.set(f64::from(to));
        tracing::info!(target: TARGET, name = %self.name, from, to, "limit resized");
        if let Some(l) = &self.listener {
            l(&Event::LimitChanged(LimitChanged {
                name: self.name.clone(),
                from,
                to,
                cause: Cause::Resized,
            }));
        }
    }
}

/// A partitioned admission; dropping it gives it back.
pub(crate) struct PartitionPermit {
    partitions: Arc<Partitions>,
    part: usize,
}

impl Drop for PartitionPermit {
    #[inline]
    fn drop(&mut self) {
        self.partitions.release(self.part);
    }
}

impl fmt::Debug for PartitionPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionPermit")
            .field("partition", &self.partitions.parts[self.part].name)
            .finish()
    }
}

/// Observes and resizes one partitioned bulkhead.
///
/// # Clone
///
/// Cheap: clones share the bulkhead (an `Arc`), as do the services it came
/// from.
#[derive(Clone, Debug)]
pub struct PartitionedHandle {
    pub(crate) partitions: Arc<Partitions>,
}

/// One partition's state at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionSnapshot {
    /// Its name (`(unmatched)` for requests whose key names no partition).
    pub name: Arc<str>,
    /// Requests in flight.
    pub in_flight: u32,
    /// Its guarantee at the current limit.
    pub guaranteed: u32,
    /// Requests admitted since the bulkhead was built.
    pub admitted: u64,
    /// Requests rejected since the bulkhead was built (shed ones included).
    pub rejected: u64,
    /// Of those, shed for their criticality.
    pub shed: u64,
}

impl PartitionedHandle {
    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.partitions.name
    }

    /// The total limit.
    pub fn limit(&self) -> u32 {
        self.partitions.gate.limit()
    }

    /// Requests in flight, all partitions together.
    pub fn in_flight(&self) -> u32 {
        self.partitions.gate.in_flight()
    }

    /// The partition named `name` (`(unmatched)` for requests whose key
    /// names none), if there is one.
    pub fn partition(&self, name: &str) -> Option<PartitionSnapshot> {
        let i = self
            .partitions
            .parts
            .iter()
            .position(|p| &*p.name == name)?;
        Some(self.snapshot_of(i))
    }

    /// Every partition, in configuration order, the unmatched one last.
    pub fn partitions(&self) -> Vec<PartitionSnapshot> {
        (0..self.partitions.parts.len())
            .map(|i| self.snapshot_of(i))
            .collect()
    }

    fn snapshot_of(&self, i: usize) -> PartitionSnapshot {
        let p = &self.partitions.parts[i];
        PartitionSnapshot {
            name: p.name.clone(),
            in_flight: self.partitions.gate.part_in_flight(i),
            guaranteed: self.partitions.gate.guarantee(i),
            admitted: p.admitted.load(Relaxed),
            rejected: p.rejected.load(Relaxed),
            shed: p.shed.load(Relaxed),
        }
    }

    /// Sets the total limit; every guarantee follows. Requests in flight
    /// keep their places; new ones are admitted by the new bounds.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `limit` unless it is in `1..=2^30`.
    pub fn resize(&self, limit: u32) -> Result<(), ConfigError> {
        check::limit("limit", limit)?;
        self.partitions.resize(limit);
        Ok(())
    }
}
