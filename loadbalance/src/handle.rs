//! Observing and controlling a balancer at run time.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use watertight_core::{Endpoint, EndpointId};

use crate::event::OutlierEvent;
use crate::stats::{Request, Shared};

/// Observes and controls one [`Balancer`](crate::Balancer).
///
/// # Clone
///
/// Cheap: clones share the balancer's state (an `Arc`).
#[derive(Clone)]
pub struct BalancerHandle {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for BalancerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancerHandle")
            .field("name", &self.shared.name)
            .finish()
    }
}

impl BalancerHandle {
    /// The balancer's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Endpoint counts per zone and state, the zone-routing state and the
    /// routing decisions so far. The counts are as of the balancer's last
    /// recomputation (on every membership, health or readiness change).
    pub fn snapshot(&self) -> Snapshot {
        let view = self.shared.view.lock().clone();
        Snapshot {
            endpoints: view.endpoints,
            zones: view.zones,
            zone_routing: view.zone_routing,
            decisions: self.decisions(),
        }
    }

    /// How many picks each routing decision made.
    pub fn decisions(&self) -> Decisions {
        let d = &self.shared.decisions;
        Decisions {
            local: d[Decision::Local as usize].load(Relaxed),
            sampled: d[Decision::Sampled as usize].load(Relaxed),
            cross_zone: d[Decision::CrossZone as usize].load(Relaxed),
            panic: d[Decision::Panic as usize].load(Relaxed),
            any: d[Decision::Any as usize].load(Relaxed),
        }
    }

    /// Every endpoint with its state, requests in flight and RTT estimate.
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        self.shared
            .endpoints
            .lock()
            .iter()
            .map(|e| e.status())
            .collect()
    }

    /// The outlier-detection log, oldest first (bounded by
    /// [`OutlierDetection::event_log_capacity`](crate::OutlierDetection::event_log_capacity)).
    pub fn outlier_log(&self) -> Vec<OutlierEvent> {
        self.shared.log.lock().iter().cloned().collect()
    }

    /// Ejects an endpoint by hand, as a detection would (it counts against
    /// `max_ejection_percent` and lasts `min(base · k, max)`). Takes effect
    /// at the balancer's next `poll_ready`; does nothing when outlier
    /// detection is off or the endpoint is unknown.
    pub fn eject(&self, id: impl Into<EndpointId>) {
        self.shared.request(Request::ManualEject(id.into()));
    }

    /// Returns an ejected endpoint to service by hand. Takes effect at the
    /// balancer's next `poll_ready`.
    pub fn uneject(&self, id: impl Into<EndpointId>) {
        self.shared.request(Request::ManualUneject(id.into()));
    }
}

/// A balancer's state at one instant.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Endpoints known.
    pub endpoints: usize,
    /// Endpoint counts per zone name.
    pub zones: BTreeMap<String, ZoneCounts>,
    /// Envoy zone-aware routing's state.
    pub zone_routing: ZoneRouting,
    /// Routing decisions so far.
    pub decisions: Decisions,
}

impl Snapshot {
    /// Endpoints in `state` over every zone.
    pub fn count(&self, state: EndpointState) -> usize {
        self.zones.values().map(|z| z.get(state)).sum()
    }
}

/// Endpoint counts of one zone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZoneCounts {
    /// Ready, in service, reported healthy.
    pub healthy: usize,
    /// Ready, in service, reported degraded.
    pub degraded: usize,
    /// Ready, in service, reported unhealthy by discovery.
    pub unhealthy: usize,
    /// Ejected by outlier detection.
    pub ejected: usize,
    /// Not ready (their service's `poll_ready` is pending).
    pub not_ready: usize,
}

impl ZoneCounts {
    /// The count of `state`.
    pub fn get(&self, state: EndpointState) -> usize {
        match state {
            EndpointState::Healthy => self.healthy,
            EndpointState::Degraded => self.degraded,
            EndpointState::Unhealthy => self.unhealthy,
            EndpointState::Ejected => self.ejected,
            EndpointState::NotReady => self.not_ready,
        }
    }

    pub(crate) fn get_mut(&mut self, state: EndpointState) -> &mut usize {
        match state {
            EndpointState::Healthy => &mut self.healthy,
            EndpointState::Degraded => &mut self.degraded,
            EndpointState::Unhealthy => &mut self.unhealthy,
            EndpointState::Ejected => &mut self.ejected,
            EndpointState::NotReady => &mut self.not_ready,
        }
    }
}

/// An endpoint's state in the balancer, most severe first: a not-ready
/// endpoint that is also ejected is `NotReady`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EndpointState {
    /// Ready, in service, reported healthy: receives its share.
    Healthy = 0,
    /// Ready, in service, reported degraded: used when healthy endpoints
    /// do not suffice.
    Degraded = 1,
    /// Reported unhealthy by discovery: used only in panic.
    Unhealthy = 2,
    /// Ejected by outlier detection: used only in panic.
    Ejected = 3,
    /// Its service is not ready (a circuit breaker in `Backpressure` mode
    /// is open, a concurrency limit is full): skipped.
    NotReady = 4,
}

impl EndpointState {
    /// All states, for iteration.
    pub const ALL: [EndpointState; 5] = [
        EndpointState::Healthy,
        EndpointState::Degraded,
        EndpointState::Unhealthy,
        EndpointState::Ejected,
        EndpointState::NotReady,
    ];

    /// `healthy`, `degraded`, `unhealthy`, `ejected` or `not_ready`: the
    /// metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointState::Healthy => "healthy",
            EndpointState::Degraded => "degraded",
            EndpointState::Unhealthy => "unhealthy",
            EndpointState::Ejected => "ejected",
            EndpointState::NotReady => "not_ready",
        }
    }

    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            0 => EndpointState::Healthy,
            1 => EndpointState::Degraded,
            2 => EndpointState::Unhealthy,
            3 => EndpointState::Ejected,
            _ => EndpointState::NotReady,
        }
    }
}

impl fmt::Display for EndpointState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One endpoint as the balancer sees it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct EndpointStatus {
    /// The endpoint.
    pub endpoint: Arc<Endpoint>,
    /// Its state.
    pub state: EndpointState,
    /// Requests in flight.
    pub active: u32,
    /// The PeakEWMA round-trip estimate now.
    pub rtt: Duration,
    /// Outlier detection's ejection multiplier `k`.
    pub ejection_multiplier: u32,
}

/// How a pick chose its locality.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Decision {
    /// The local zone, by rule: zone-aware routing with enough local
    /// capacity, or prefer-local / weighted choices that landed locally.
    Local = 0,
    /// The local zone, by zone-aware routing's sampling (the local zone has
    /// less capacity than its share of clients).
    Sampled = 1,
    /// Another zone.
    CrossZone = 2,
    /// The priority level was in panic: any endpoint of it.
    Panic = 3,
    /// No locality stage applied (no local zone, zone routing off,
    /// degraded endpoints, hashing).
    Any = 4,
}

impl Decision {
    /// All decisions, for iteration.
    pub const ALL: [Decision; 5] = [
        Decision::Local,
        Decision::Sampled,
        Decision::CrossZone,
        Decision::Panic,
        Decision::Any,
    ];

    /// `local`, `sampled`, `cross_zone`, `panic` or `any`: the metrics
    /// label.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Local => "local",
            Decision::Sampled => "sampled",
            Decision::CrossZone => "cross_zone",
            Decision::Panic => "panic",
            Decision::Any => "any",
        }
    }
}

/// Routing decision counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decisions {
    /// [`Decision::Local`].
    pub local: u64,
    /// [`Decision::Sampled`].
    pub sampled: u64,
    /// [`Decision::CrossZone`].
    pub cross_zone: u64,
    /// [`Decision::Panic`].
    pub panic: u64,
    /// [`Decision::Any`].
    pub any: u64,
}

impl Decisions {
    /// All picks.
    pub fn total(&self) -> u64 {
        self.local + self.sampled + self.cross_zone + self.panic + self.any
    }
}

/// Envoy zone-aware routing's state (of the default subset).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum ZoneRouting {
    /// The locality policy is not zone-aware.
    #[default]
    NotConfigured,
    /// Zone routing is off for now.
    Off(ZoneRoutingOff),
    /// Everything goes to the local zone.
    Local,
    /// The local zone gets `local_share` of requests; the rest go to zones
    /// with residual capacity.
    Sampled {
        /// The fraction routed locally.
        local_share: f64,
    },
}

/// Why zone routing is off (Envoy's early exits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ZoneRoutingOff {
    /// Fewer than 2 localities have upstream endpoints.
    TooFewUpstreamLocalities,
    /// The local cluster spans fewer than 2 localities.
    TooFewLocalLocalities,
    /// The local cluster has no (healthy) member in the local zone.
    NoLocalHosts,
    /// The local cluster itself is below the panic threshold.
    LocalClusterInPanic,
    /// Fewer healthy upstream endpoints than `min_cluster_size`.
    ClusterTooSmall,
}

/// What the balancer publishes for its handle.
#[derive(Clone, Debug, Default)]
pub(crate) struct View {
    pub(crate) endpoints: usize,
    pub(crate) zones: BTreeMap<String, ZoneCounts>,
    pub(crate) zone_routing: ZoneRouting,
}
