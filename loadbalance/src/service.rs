use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_core::Stream;
use futures_util::stream::FuturesUnordered;
use metrics::{Counter, Gauge, Label};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::time::{Instant, Sleep};
use tower_service::Service;
use watertight_core::ext::{Attempted, Extensions};
use watertight_core::{
    BoxError, Change, Classify, Endpoint, EndpointId, Health, Locality, Selected,
};

use crate::config::{Config, Load, LocalityPolicy, Pick, SlowStart, ZoneAvoidance, ZoneAware};
use crate::error::NoHealthyEndpoints;
use crate::event::{Event, Evicted, Listener, OutlierAction, OutlierEvent};
use crate::future::ResponseFuture;
use crate::group::{below, unit, Group, NONE};
use crate::handle::{BalancerHandle, Decision, EndpointState, ZoneCounts, ZoneRouting};
use crate::hash::{mix, MaglevTable, Member, Ring, Table};
use crate::hints::ServerHints;
use crate::outlier::Detection;
use crate::pending::{Cancel, Outcome, PendingReady};
use crate::plan::{
    available_zones, locality_weights, priority_loads, zone_route, LevelCounts, PriorityLoads,
    Tier, ZoneInputs, ZoneRoute, BASIS,
};
use crate::stats::{EndpointStats, Hooks, Request, Shared, StatusSource, Tracker};

pub(crate) type ChangeStream = Pin<Box<dyn Stream<Item = Result<Change, BoxError>> + Send>>;
type NewEndpointFn<S> = Box<dyn Fn(&Endpoint) -> S + Send>;
type HashKeyFn<Req> = Box<dyn Fn(&Req) -> Option<u64> + Send + Sync>;
type SubsetFn<Req> = Box<dyn for<'a> Fn(&'a Req) -> Option<&'a str> + Send + Sync>;

/// Group kinds an endpoint can be a member of, indexing `Slot::pos`.
const K_BUCKET: usize = 0;
const K_TIER: usize = 1;
const K_PANIC: usize = 2;

/// Hash tables per level: healthy, degraded, every endpoint (panic).
const H_ALL: usize = 2;

/// Changes read from a discovery stream in one `poll_ready` at most.
const DISCOVERY_BUDGET: usize = 1024;

/// Step `step` of draining a change stream in one poll: its next change,
/// `Ready(None)` once it has ended, and `Pending` when it has nothing
/// ready, is gone, or has had its [`DISCOVERY_BUDGET`] steps (the task is
/// then woken to go on, so a busy stream does not hold the poll).
fn poll_change(
    stream: Option<&mut ChangeStream>,
    step: usize,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Change, BoxError>>> {
    let Some(stream) = stream else {
        return Poll::Pending;
    };
    if step == DISCOVERY_BUDGET {
        cx.waker().wake_by_ref();
        return Poll::Pending;
    }
    stream.as_mut().poll_next(cx)
}

/// A client-side load balancer: a [`Service`] that sends each request to
/// one endpoint of a discovered set.
///
/// Built with a [`Builder`](crate::Builder); see the [crate docs](crate) for the
/// pick pipeline. Endpoints come from a stream of
/// [`Change`]s (any `watertight-discovery` source); each endpoint's service
/// is built by the `new_endpoint` function given to
/// [`Builder::build`](crate::Builder::build), which is where per-endpoint
/// layers go (a circuit breaker in `Backpressure` mode, a per-try timeout,
/// fault injection).
///
/// - An endpoint whose service is not ready is skipped, and counts as
///   unavailable in the priority, panic and locality arithmetic until it is
///   ready again; it is polled again only when its service wakes it.
/// - An endpoint whose service fails its readiness check is removed until
///   discovery announces it again.
/// - Every request gets a [`Selected`] extension naming the chosen endpoint,
///   for the layers inside.
/// - A request carrying an [`Attempted`] extension (put there by a retry or
///   hedging layer) goes to an endpoint not yet tried, within the same
///   locality decision, if one is ready; the pick is recorded in it.
/// - Errors of the discovery stream keep the current set; its end keeps it
///   too.
///
/// `poll_ready` does the choosing (and returns `Pending` only when no
/// endpoint is ready); `call` may revise the choice for what only the
/// request says (its hash key, a subset override, the endpoints already
/// tried).
///
/// The balancer is not `Clone`: put it behind `tower::buffer::Buffer` to
/// share it between tasks.
pub struct Balancer<S, Req>
where
    S: Service<Req>,
{
    config: Arc<Config>,
    policy: Policy,
    discover: Option<ChangeStream>,
    local_stream: Option<ChangeStream>,
    new_endpoint: NewEndpointFn<S>,
    hooks: Arc<Hooks<S::Response, S::Error>>,
    shared: Arc<Shared>,
    listener: Option<Listener>,

    slots: Vec<Slot<S, Req>>,
    free: Vec<u32>,
    by_id: HashMap<EndpointId, u32>,
    live: usize,
    ejected: usize,
    pending: FuturesUnordered<PendingReady<S, Req>>,
    parked: bool,

    plans: Vec<Plan>,
    subset_key: Option<String>,
    subset_values: Vec<String>,
    subset_cum: Vec<(f64, usize)>,
    localities: Vec<Locality>,
    loc_index: HashMap<(String, String), u32>,
    local_loc: Option<u32>,
    local_cluster: Option<LocalCluster>,
    zone_counts: Vec<ZoneCounts>,

    rng: SmallRng,
    chosen: Option<Chosen>,
    routing_dirty: bool,
    membership_changed: bool,
    initialized: bool,
    started: bool,
    timers: BinaryHeap<Reverse<Timer>>,
    timer_seq: u64,
    sleep: Option<Pin<Box<Sleep>>>,
    metrics: Metrics,

    hash_key: Option<HashKeyFn<Req>>,
    subset_override: Option<SubsetFn<Req>>,
    overprovisioning: u64,
    _req: PhantomData<fn(Req)>,
}

/// The locality policy after `Auto` is resolved.
#[derive(Clone, Copy, Debug)]
enum Policy {
    None,
    ZoneAware(ZoneAware),
    Weighted,
    PreferLocal,
    Avoid(ZoneAvoidance),
}

struct Slot<S, Req>
where
    S: Service<Req>,
{
    live: bool,
    /// Bumped when the slot is freed, so stale timers, waiting futures and
    /// ejection requests are recognised.
    gen: u32,
    /// Bumped on every re-indexing, so stale EDF entries are recognised.
    epoch: u32,
    endpoint: Arc<Endpoint>,
    selected: Selected,
    service: Option<S>,
    cancel: Option<Arc<Cancel>>,
    tracker: Arc<Tracker<S::Response, S::Error>>,
    subset: usize,
    prio: usize,
    loc: u32,
    /// Ready: the service is here (not waiting in `pending`). It is polled
    /// again right before every call, as tower's balancer does: readiness
    /// can be withdrawn.
    ready: bool,
    ejected: bool,
    k: u32,
    uneject_at: Option<Instant>,
    last_uneject: Option<Instant>,
    added_at: Instant,
    ramp_until: Option<Instant>,
    /// Positions in the groups of each kind (`NONE` when not a member).
    pos: [u32; 3],
    joined_tier: Tier,
    joined_ramping: bool,
    attached: bool,
    state: EndpointState,
}

#[derive(Default)]
struct LocBucket {
    tiers: [Group; 2],
    total: u32,
    weight: u64,
}

#[derive(Default)]
struct Level {
    locs: Vec<LocBucket>,
    tiers: [Group; 2],
    panic: Group,
    total: u32,
    hash: [Option<(u64, Table)>; 3],
}

#[derive(Default)]
struct Plan {
    levels: Vec<Level>,
    loads: PriorityLoads,
    healthy_routes: Vec<Route>,
    degraded_routes: Vec<Route>,
    /// Bumped on membership, health and ejection changes (not readiness):
    /// hash tables are rebuilt when it moves.
    hash_version: u64,
}

impl Plan {
    fn has_ready(&self) -> bool {
        self.levels.iter().any(|l| !l.panic.is_empty())
    }
}

/// A precomputed locality choice for one level and tier.
#[derive(Clone, Debug, Default)]
enum Route {
    #[default]
    Any,
    Zone(ZoneRoute),
    Weighted(Vec<(f64, u32)>),
    PreferLocal {
        local: u32,
        share: f64,
        others: Vec<(f64, u32)>,
    },
    Avoid(Vec<(u64, u32)>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GroupRef {
    Bucket { s: usize, p: usize, l: u32, t: Tier },
    Tier { s: usize, p: usize, t: Tier },
    Panic { s: usize, p: usize },
}

#[derive(Clone, Copy, Debug)]
enum Chosen {
    Slot {
        idx: u32,
        gen: u32,
        epoch: u32,
        group: GroupRef,
        decision: Decision,
    },
    Fail {
        priority: u8,
    },
}

#[derive(Default)]
struct LocalCluster {
    members: HashMap<EndpointId, (u32, bool)>,
    total: Vec<u32>,
    healthy: Vec<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Sweep,
    Refresh,
    Uneject { slot: u32, gen: u32 },
    RampEnd { slot: u32, gen: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    at: Instant,
    seq: u64,
    kind: TimerKind,
}

struct Metrics {
    labels: Vec<Label>,
    decisions: [Counter; 5],
    evictions: Counter,
    discovery_errors: Counter,
    ejected: Gauge,
    local_share: Gauge,
    zones: Vec<[Gauge; 5]>,
}

impl Metrics {
    fn new(name: &Arc<str>) -> Self {
        let labels = vec![Label::new("name", name.to_string())];
        let decision = |d: Decision| {
            let mut l = labels.clone();
            l.push(Label::new("decision", d.as_str()));
            metrics::counter!("watertight_loadbalance_decisions_total", l)
        };
        let ejected = metrics::gauge!("watertight_loadbalance_ejected_endpoints", labels.clone());
        ejected.set(0.0);
        let local_share =
            metrics::gauge!("watertight_loadbalance_zone_local_share", labels.clone());
        local_share.set(0.0);
        Metrics {
            decisions: Decision::ALL.map(decision),
            evictions: metrics::counter!("watertight_loadbalance_evictions_total", labels.clone()),
            discovery_errors: metrics::counter!(
                "watertight_loadbalance_discovery_errors_total",
                labels.clone()
            ),
            ejected,
            local_share,
            zones: Vec::new(),
            labels,
        }
    }

    fn add_zone(&mut self, zone: &str) {
        let gauges = EndpointState::ALL.map(|s| {
            let mut l = self.labels.clone();
            l.push(Label::new("zone", zone.to_owned()));
            l.push(Label::new("state", s.as_str()));
            let g = metrics::gauge!("watertight_loadbalance_endpoints", l);
            g.set(0.0);
            g
        });
        self.zones.push(gauges);
    }
}

fn group_mut(plans: &mut [Plan], g: GroupRef) -> &mut Group {
    match g {
        GroupRef::Bucket { s, p, l, t } => {
            &mut plans[s].levels[p].locs[l as usize].tiers[t as usize]
        }
        GroupRef::Tier { s, p, t } => &mut plans[s].levels[p].tiers[t as usize],
        GroupRef::Panic { s, p } => &mut plans[s].levels[p].panic,
    }
}

fn group(plans: &[Plan], g: GroupRef) -> &Group {
    match g {
        GroupRef::Bucket { s, p, l, t } => &plans[s].levels[p].locs[l as usize].tiers[t as usize],
        GroupRef::Tier { s, p, t } => &plans[s].levels[p].tiers[t as usize],
        GroupRef::Panic { s, p } => &plans[s].levels[p].panic,
    }
}

fn tier_of(health: Health) -> Option<Tier> {
    match health {
        Health::Healthy => Some(Tier::Healthy),
        Health::Degraded => Some(Tier::Degraded),
        Health::Unhealthy => None,
    }
}

/// An endpoint's EDF weight: `weight · slow start / (active + 1)^bias`.
fn edf_weight<S: Service<Req>, Req>(
    sl: &Slot<S, Req>,
    now: Instant,
    ss: Option<&SlowStart>,
    bias: f64,
) -> f64 {
    let mut w = f64::from(sl.endpoint.weight);
    if let (Some(ss), Some(until)) = (ss, sl.ramp_until) {
        if now < until {
            w *= ss.factor(now.saturating_duration_since(sl.added_at));
        }
    }
    if bias == 0.0 {
        return w;
    }
    let active = f64::from(sl.tracker.stats.active.load(Relaxed)) + 1.0;
    if bias == 1.0 {
        w / active
    } else {
        w / active.powf(bias)
    }
}

/// Draws a locality for `route`; `None` means every endpoint of the tier.
fn draw(
    route: &Route,
    rng: &mut SmallRng,
    local: Option<u32>,
    routing_enabled_bp: u64,
) -> Option<(u32, Decision)> {
    let side = |l: u32| {
        if local.is_none() {
            Decision::Any
        } else if Some(l) == local {
            Decision::Local
        } else {
            Decision::CrossZone
        }
    };
    match route {
        Route::Any => None,
        Route::Zone(z) => {
            if routing_enabled_bp < BASIS && below(rng, BASIS as usize) as u64 >= routing_enabled_bp
            {
                return None;
            }
            match z {
                ZoneRoute::Off(_) => None,
                ZoneRoute::Direct { local } => Some((*local, Decision::Local)),
                ZoneRoute::Residual {
                    local,
                    local_bp,
                    residual,
                    uniform,
                } => {
                    if (below(rng, BASIS as usize) as u64) < *local_bp {
                        return Some((*local, Decision::Sampled));
                    }
                    if let Some(&(total, _)) = residual.last() {
                        let r = below(rng, total as usize) as u64;
                        let i = residual.partition_point(|&(c, _)| c <= r);
                        return Some((residual[i].1, Decision::CrossZone));
                    }
                    if uniform.is_empty() {
                        return Some((*local, Decision::Sampled));
                    }
                    Some((uniform[below(rng, uniform.len())], Decision::CrossZone))
                }
            }
        }
        Route::Weighted(cum) => {
            let &(total, _) = cum.last()?;
            let r = unit(rng) * total;
            let i = cum.partition_point(|&(c, _)| c <= r).min(cum.len() - 1);
            Some((cum[i].1, side(cum[i].1)))
        }
        Route::PreferLocal {
            local: l,
            share,
            others,
        } => {
            if unit(rng) < *share || others.is_empty() {
                return Some((*l, Decision::Local));
            }
            let total = others.last().map_or(0.0, |o| o.0);
            let r = unit(rng) * total;
            let i = others
                .partition_point(|&(c, _)| c <= r)
                .min(others.len() - 1);
            Some((others[i].1, Decision::CrossZone))
        }
        Route::Avoid(cum) => {
            let &(total, _) = cum.last()?;
            let r = below(rng, total as usize) as u64;
            let i = cum.partition_point(|&(c, _)| c <= r);
            Some((cum[i].1, side(cum[i].1)))
        }
    }
}

impl<S, Req> Balancer<S, Req>
where
    S: Service<Req>,
    S::Response: 'static,
    S::Error: 'static,
{
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_parts<C, H>(
        config: Config,
        discover: ChangeStream,
        local_stream: Option<ChangeStream>,
        new_endpoint: NewEndpointFn<S>,
        classify: C,
        hints: H,
        listener: Option<Listener>,
    ) -> Self
    where
        C: Classify<S::Response, S::Error> + Send + Sync + 'static,
        H: ServerHints<S::Response> + Send + Sync + 'static,
    {
        let name: Arc<str> = config.name.as_str().into();
        let log_capacity = config
            .outlier_detection
            .as_ref()
            .map_or(0, |o| o.event_log_capacity);
        let shared = Arc::new(Shared::new(name.clone(), log_capacity));
        let od = config.outlier_detection.as_ref();
        let hooks = Arc::new(Hooks {
            classify: Box::new(classify),
            hints: Box::new(hints),
            epoch: Instant::now(),
            tau_ns: config.peak_ewma.decay.as_nanos() as f64,
            penalty_ns: config.peak_ewma.failure_penalty.as_nanos() as f64,
            max_hint_ns: config.peak_ewma.max_hint_penalty.as_nanos() as f64,
            consecutive_5xx: od.and_then(|o| o.consecutive_5xx).unwrap_or(0),
            consecutive_gateway: od.and_then(|o| o.consecutive_gateway_failure).unwrap_or(0),
            outliers: od.is_some(),
            shared: shared.clone(),
        });
        let policy = match config.locality {
            LocalityPolicy::Auto => match (&local_stream, &config.local_locality) {
                (Some(_), Some(_)) => Policy::ZoneAware(ZoneAware::default()),
                (None, Some(_)) => Policy::PreferLocal,
                _ => Policy::None,
            },
            LocalityPolicy::Disabled => Policy::None,
            LocalityPolicy::ZoneAware(z) => Policy::ZoneAware(z),
            LocalityPolicy::LocalityWeighted => Policy::Weighted,
            LocalityPolicy::PreferLocal => Policy::PreferLocal,
            LocalityPolicy::ZoneAvoidance(z) => Policy::Avoid(z),
        };
        let (subset_key, subset_values, subset_cum) = match &config.subsets {
            None => (None, Vec::new(), Vec::new()),
            Some(s) => {
                let mut acc = 0.0;
                let cum = s
                    .shares
                    .iter()
                    .enumerate()
                    .map(|(i, sh)| {
                        acc += sh.share;
                        (acc, i + 1)
                    })
                    .collect();
                (
                    Some(s.key.clone()),
                    s.shares.iter().map(|sh| sh.value.clone()).collect(),
                    cum,
                )
            }
        };
        let rng = match config.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        };
        let metrics = Metrics::new(&name);
        let overprovisioning = (config.overprovisioning_factor * 100.0).round() as u64;
        let mut this = Balancer {
            policy,
            discover: Some(discover),
            local_cluster: local_stream.as_ref().map(|_| LocalCluster::default()),
            local_stream,
            new_endpoint,
            hooks,
            shared,
            listener,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            live: 0,
            ejected: 0,
            pending: FuturesUnordered::new(),
            parked: false,
            plans: (0..=subset_values.len()).map(|_| Plan::default()).collect(),
            subset_key,
            subset_values,
            subset_cum,
            localities: Vec::new(),
            loc_index: HashMap::new(),
            local_loc: None,
            zone_counts: Vec::new(),
            rng,
            chosen: None,
            routing_dirty: true,
            membership_changed: true,
            initialized: false,
            started: false,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            sleep: None,
            metrics,
            hash_key: None,
            subset_override: None,
            overprovisioning,
            config: Arc::new(config),
            _req: PhantomData,
        };
        if let Some(local) = this.config.local_locality.clone() {
            this.local_loc = Some(this.intern(&local));
        }
        this
    }

    /// A handle to observe and control this balancer.
    pub fn handle(&self) -> BalancerHandle {
        BalancerHandle {
            shared: self.shared.clone(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Endpoints currently known (ready or not).
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no endpoint is known.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Hashes requests for [`Pick::RingHash`] and [`Pick::Maglev`]: `key`
    /// returns a request's key hash (see [`hash_key`](crate::hash_key)),
    /// or `None` to balance it by P2C. Requests with the same key go to the
    /// same endpoint while it is available.
    pub fn with_hash_key<F>(mut self, key: F) -> Self
    where
        F: Fn(&Req) -> Option<u64> + Send + Sync + 'static,
    {
        self.hash_key = Some(Box::new(key));
        self
    }

    /// Lets a request choose its subset: `subset` returns the label value
    /// of one of the configured [`Subsets`](crate::Subsets) (a header, say;
    /// see [`http::subset_header`](crate::http::subset_header)), or `None`
    /// to draw by the shares. An unknown value is ignored; a subset without
    /// ready endpoints falls back to the default subset.
    pub fn with_subset_override<F>(mut self, subset: F) -> Self
    where
        F: for<'a> Fn(&'a Req) -> Option<&'a str> + Send + Sync + 'static,
    {
        self.subset_override = Some(Box::new(subset));
        self
    }

    fn emit(&self, event: Event) {
        if let Some(l) = &self.listener {
            l(&event);
        }
    }

    // ===== localities, subsets, levels =====

    fn intern(&mut self, locality: &Locality) -> u32 {
        let key = (locality.region.clone(), locality.zone.clone());
        if let Some(&i) = self.loc_index.get(&key) {
            return i;
        }
        let i = self.localities.len() as u32;
        self.loc_index.insert(key, i);
        self.localities
            .push(Locality::new(&locality.region, &locality.zone));
        self.zone_counts.push(ZoneCounts::default());
        self.metrics.add_zone(&locality.zone);
        for plan in &mut self.plans {
            for level in &mut plan.levels {
                level.locs.push(LocBucket::default());
            }
        }
        if let Some(lc) = &mut self.local_cluster {
            lc.total.push(0);
            lc.healthy.push(0);
        }
        i
    }

    fn subset_of(&self, e: &Endpoint) -> usize {
        let Some(key) = &self.subset_key else {
            return 0;
        };
        match e.labels.get(key) {
            Some(v) => self
                .subset_values
                .iter()
                .position(|x| x == v)
                .map_or(0, |i| i + 1),
            None => 0,
        }
    }

    fn ensure_level(&mut self, s: usize, p: usize) {
        let n = self.localities.len();
        let levels = &mut self.plans[s].levels;
        while levels.len() <= p {
            levels.push(Level {
                locs: (0..n).map(|_| LocBucket::default()).collect(),
                ..Level::default()
            });
        }
    }

    // ===== membership =====

    fn state_of(&self, idx: u32) -> EndpointState {
        let slot = &self.slots[idx as usize];
        if !slot.ready {
            EndpointState::NotReady
        } else if slot.ejected {
            EndpointState::Ejected
        } else {
            match slot.endpoint.health {
                Health::Healthy => EndpointState::Healthy,
                Health::Degraded => EndpointState::Degraded,
                Health::Unhealthy => EndpointState::Unhealthy,
            }
        }
    }

    fn bias(&self) -> f64 {
        match self.config.pick {
            Pick::RoundRobin => 0.0,
            _ => self.config.active_request_bias,
        }
    }

    /// Leaves every group and uncounts the endpoint.
    fn detach(&mut self, idx: u32) {
        let i = idx as usize;
        if !self.slots[i].attached {
            return;
        }
        let (s, p, l, t) = {
            let sl = &self.slots[i];
            (sl.subset, sl.prio, sl.loc, sl.joined_tier)
        };
        let weight = self.slots[i].endpoint.weight;
        let ramping = self.slots[i].joined_ramping;
        for kind in [K_BUCKET, K_TIER, K_PANIC] {
            let pos = self.slots[i].pos[kind];
            if pos == NONE {
                continue;
            }
            let g = match kind {
                K_BUCKET => GroupRef::Bucket { s, p, l, t },
                K_TIER => GroupRef::Tier { s, p, t },
                _ => GroupRef::Panic { s, p },
            };
            if let Some(moved) = group_mut(&mut self.plans, g).remove(pos, weight, ramping) {
                self.slots[moved as usize].pos[kind] = pos;
            }
            self.slots[i].pos[kind] = NONE;
        }
        let state = self.slots[i].state;
        *self.zone_counts[l as usize].get_mut(state) -= 1;
        let level = &mut self.plans[s].levels[p];
        level.total -= 1;
        level.locs[l as usize].total -= 1;
        level.locs[l as usize].weight -= u64::from(weight);
        self.slots[i].attached = false;
    }

    /// Counts the endpoint and joins the groups its state puts it in.
    fn attach(&mut self, idx: u32, now: Instant) {
        let i = idx as usize;
        if !self.slots[i].live || self.slots[i].attached {
            return;
        }
        let state = self.state_of(idx);
        let (s, p, l) = {
            let sl = &self.slots[i];
            (sl.subset, sl.prio, sl.loc)
        };
        let weight = self.slots[i].endpoint.weight;
        *self.zone_counts[l as usize].get_mut(state) += 1;
        {
            let level = &mut self.plans[s].levels[p];
            level.total += 1;
            level.locs[l as usize].total += 1;
            level.locs[l as usize].weight += u64::from(weight);
        }
        let ramping = self.slots[i].ramp_until.is_some_and(|u| now < u);
        let epoch = self.slots[i].epoch.wrapping_add(1);
        {
            let sl = &mut self.slots[i];
            sl.state = state;
            sl.tracker.stats.set_state(state);
            sl.attached = true;
            sl.epoch = epoch;
            sl.joined_ramping = ramping;
        }
        if !self.slots[i].ready {
            return;
        }
        let w = edf_weight(
            &self.slots[i],
            now,
            self.config.slow_start.as_ref(),
            self.bias(),
        );
        let pos = group_mut(&mut self.plans, GroupRef::Panic { s, p })
            .push(idx, weight, ramping, epoch, w);
        self.slots[i].pos[K_PANIC] = pos;
        if self.slots[i].ejected {
            return;
        }
        if let Some(t) = tier_of(self.slots[i].endpoint.health) {
            self.slots[i].joined_tier = t;
            let pos = group_mut(&mut self.plans, GroupRef::Bucket { s, p, l, t })
                .push(idx, weight, ramping, epoch, w);
            self.slots[i].pos[K_BUCKET] = pos;
            let pos = group_mut(&mut self.plans, GroupRef::Tier { s, p, t })
                .push(idx, weight, ramping, epoch, w);
            self.slots[i].pos[K_TIER] = pos;
        }
    }

    /// Re-files an endpoint after its state changed. `readiness` says the
    /// change was only one of readiness (hash tables stay).
    fn reindex(&mut self, idx: u32, now: Instant, readiness: bool) {
        self.detach(idx);
        self.attach(idx, now);
        self.routing_dirty = true;
        if !readiness {
            let s = self.slots[idx as usize].subset;
            self.plans[s].hash_version += 1;
        }
    }

    fn apply(&mut self, change: Change, now: Instant) {
        match change {
            Change::Insert(e) => self.upsert(e, now),
            Change::Remove(id) => {
                if let Some(&idx) = self.by_id.get(&id) {
                    self.remove_slot(idx, "removed by discovery");
                }
            }
            Change::Reset(list) => {
                let keep: HashSet<&EndpointId> = list.iter().map(|e| &e.id).collect();
                let gone: Vec<u32> = self
                    .by_id
                    .iter()
                    .filter(|(id, _)| !keep.contains(id))
                    .map(|(_, &i)| i)
                    .collect();
                for idx in gone {
                    self.remove_slot(idx, "removed by discovery");
                }
                for e in list {
                    self.upsert(e, now);
                }
            }
        }
    }

    fn upsert(&mut self, e: Endpoint, now: Instant) {
        let Some(&idx) = self.by_id.get(&e.id) else {
            self.insert_new(e, now);
            return;
        };
        let i = idx as usize;
        if *self.slots[i].endpoint == e {
            return;
        }
        if self.slots[i].endpoint.addr != e.addr {
            self.remove_slot(idx, "address changed");
            self.insert_new(e, now);
            return;
        }
        // Same service, new metadata: keep its breaker and statistics.
        self.detach(idx);
        let old_subset = self.slots[i].subset;
        let subset = self.subset_of(&e);
        let loc = self.intern(&e.locality);
        let prio = usize::from(e.priority);
        self.ensure_level(subset, prio);
        let endpoint = Arc::new(e);
        {
            let sl = &mut self.slots[i];
            sl.selected = Selected::new(endpoint.clone());
            sl.endpoint = endpoint.clone();
            sl.subset = subset;
            sl.prio = prio;
            sl.loc = loc;
        }
        *self.slots[i].tracker.endpoint.lock() = endpoint;
        self.attach(idx, now);
        self.plans[old_subset].hash_version += 1;
        self.plans[subset].hash_version += 1;
        self.routing_dirty = true;
        self.membership_changed = true;
        tracing::debug!(
            target: "watertight_loadbalance",
            name = %self.shared.name,
            endpoint = %self.slots[i].endpoint.id,
            "endpoint updated"
        );
    }

    fn insert_new(&mut self, e: Endpoint, now: Instant) {
        let service = (self.new_endpoint)(&e);
        let subset = self.subset_of(&e);
        let loc = self.intern(&e.locality);
        let prio = usize::from(e.priority);
        self.ensure_level(subset, prio);
        let idx = match self.free.pop() {
            Some(i) => i,
            None => self.slots.len() as u32,
        };
        // A reused slot keeps counting generations and epochs, so nothing
        // that named its previous endpoint (timers, waiting futures, EDF
        // entries) can match the new one.
        let (gen, epoch) = self
            .slots
            .get(idx as usize)
            .map_or((0, 0), |s| (s.gen, s.epoch));
        let endpoint = Arc::new(e);
        let tracker = Arc::new(Tracker {
            stats: EndpointStats::new(
                self.config.peak_ewma.default_rtt.as_nanos() as f64,
                self.hooks.nanos(now),
            ),
            endpoint: Mutex::new(endpoint.clone()),
            slot: idx,
            gen,
            hooks: self.hooks.clone(),
        });
        let ramp_until = match (&self.config.slow_start, self.initialized) {
            (Some(ss), true) => Some(now + ss.window),
            _ => None,
        };
        let slot = Slot {
            live: true,
            gen,
            epoch,
            selected: Selected::new(endpoint.clone()),
            endpoint,
            service: Some(service),
            cancel: None,
            tracker,
            subset,
            prio,
            loc,
            ready: true,
            ejected: false,
            k: 0,
            uneject_at: None,
            last_uneject: None,
            added_at: now,
            ramp_until,
            pos: [NONE; 3],
            joined_tier: Tier::Healthy,
            joined_ramping: false,
            attached: false,
            state: EndpointState::Healthy,
        };
        if (idx as usize) < self.slots.len() {
            self.slots[idx as usize] = slot;
        } else {
            self.slots.push(slot);
        }
        self.by_id
            .insert(self.slots[idx as usize].endpoint.id.clone(), idx);
        self.live += 1;
        if let Some(at) = ramp_until {
            self.schedule(at, TimerKind::RampEnd { slot: idx, gen });
        }
        self.attach(idx, now);
        self.plans[subset].hash_version += 1;
        self.routing_dirty = true;
        self.membership_changed = true;
        tracing::debug!(
            target: "watertight_loadbalance",
            name = %self.shared.name,
            endpoint = %self.slots[idx as usize].endpoint.id,
            zone = %self.slots[idx as usize].endpoint.locality.zone,
            "endpoint added"
        );
    }

    fn remove_slot(&mut self, idx: u32, why: &'static str) {
        let i = idx as usize;
        if !self.slots[i].live {
            return;
        }
        self.detach(idx);
        let subset = self.slots[i].subset;
        {
            let sl = &mut self.slots[i];
            sl.live = false;
            sl.gen = sl.gen.wrapping_add(1);
            sl.epoch = sl.epoch.wrapping_add(1);
            sl.service = None;
            sl.ready = false;
            if let Some(c) = sl.cancel.take() {
                c.cancel();
            }
        }
        if self.slots[i].ejected {
            self.slots[i].ejected = false;
            self.ejected -= 1;
            self.metrics.ejected.set(self.ejected as f64);
        }
        let id = self.slots[i].endpoint.id.clone();
        self.by_id.remove(&id);
        self.free.push(idx);
        self.live -= 1;
        if let Some(Chosen::Slot { idx: c, .. }) = self.chosen {
            if c == idx {
                self.chosen = None;
            }
        }
        self.plans[subset].hash_version += 1;
        self.routing_dirty = true;
        self.membership_changed = true;
        tracing::debug!(
            target: "watertight_loadbalance",
            name = %self.shared.name,
            endpoint = %id,
            reason = why,
            "endpoint removed"
        );
    }

    fn apply_local(&mut self, change: Change) {
        let entries: Vec<(EndpointId, Option<(Locality, bool)>)> = match change {
            Change::Insert(e) => vec![(e.id, Some((e.locality, e.health == Health::Healthy)))],
            Change::Remove(id) => vec![(id, None)],
            Change::Reset(list) => {
                let keep: HashSet<EndpointId> = list.iter().map(|e| e.id.clone()).collect();
                let mut out: Vec<_> = self
                    .local_cluster
                    .as_ref()
                    .map(|lc| {
                        lc.members
                            .keys()
                            .filter(|id| !keep.contains(*id))
                            .map(|id| (id.clone(), None))
                            .collect()
                    })
                    .unwrap_or_default();
                out.extend(
                    list.into_iter()
                        .map(|e| (e.id, Some((e.locality, e.health == Health::Healthy)))),
                );
                out
            }
        };
        for (id, member) in entries {
            let member = member.map(|(loc, healthy)| (self.intern(&loc), healthy));
            let Some(lc) = self.local_cluster.as_mut() else {
                return;
            };
            if let Some((l, h)) = lc.members.remove(&id) {
                lc.total[l as usize] -= 1;
                lc.healthy[l as usize] -= u32::from(h);
            }
            if let Some((l, h)) = member {
                lc.total[l as usize] += 1;
                lc.healthy[l as usize] += u32::from(h);
                lc.members.insert(id, (l, h));
            }
        }
        self.routing_dirty = true;
    }

    fn poll_discovery(&mut self, cx: &mut Context<'_>, now: Instant) {
        for step in 0..=DISCOVERY_BUDGET {
            match poll_change(self.discover.as_mut(), step, cx) {
                Poll::Ready(Some(Ok(change))) => self.apply(change, now),
                Poll::Ready(Some(Err(error))) => {
                    self.metrics.discovery_errors.increment(1);
                    tracing::warn!(
                        target: "watertight_loadbalance",
                        name = %self.shared.name,
                        %error,
                        "discovery error; keeping the current endpoints"
                    );
                }
                Poll::Ready(None) => {
                    tracing::debug!(
                        target: "watertight_loadbalance",
                        name = %self.shared.name,
                        "discovery ended; keeping the current endpoints"
                    );
                    self.discover = None;
                }
                Poll::Pending => break,
            }
        }
        for step in 0..=DISCOVERY_BUDGET {
            match poll_change(self.local_stream.as_mut(), step, cx) {
                Poll::Ready(Some(Ok(change))) => self.apply_local(change),
                Poll::Ready(Some(Err(error))) => {
                    self.metrics.discovery_errors.increment(1);
                    tracing::warn!(
                        target: "watertight_loadbalance",
                        name = %self.shared.name,
                        %error,
                        "local cluster discovery error; keeping the current view"
                    );
                }
                Poll::Ready(None) => self.local_stream = None,
                Poll::Pending => break,
            }
        }
        if !self.initialized && self.live > 0 {
            self.initialized = true;
        }
    }

    // ===== readiness =====

    /// The endpoint's service is not ready: it waits in `pending`.
    fn park(&mut self, idx: u32, now: Instant) {
        let i = idx as usize;
        let Some(svc) = self.slots[i].service.take() else {
            return;
        };
        let cancel = Arc::new(Cancel::default());
        {
            let sl = &mut self.slots[i];
            sl.cancel = Some(cancel.clone());
            sl.ready = false;
        }
        self.pending.push(PendingReady {
            svc: Some(svc),
            slot: idx,
            gen: self.slots[i].gen,
            cancel,
            _req: PhantomData,
        });
        self.parked = true;
        self.reindex(idx, now, true);
    }

    fn evict(&mut self, idx: u32, error: BoxError) {
        let id = self.slots[idx as usize].endpoint.id.clone();
        self.metrics.evictions.increment(1);
        tracing::warn!(
            target: "watertight_loadbalance",
            name = %self.shared.name,
            endpoint = %id,
            %error,
            "endpoint failed its readiness check; removed until rediscovered"
        );
        self.remove_slot(idx, "readiness failed");
        self.emit(Event::Evicted(Evicted {
            name: self.shared.name.clone(),
            endpoint: id,
            error: error.to_string(),
        }));
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>, now: Instant)
    where
        S::Error: Into<BoxError>,
    {
        self.parked = false;
        while let Poll::Ready(Some((idx, gen, outcome))) = Pin::new(&mut self.pending).poll_next(cx)
        {
            let i = idx as usize;
            let valid = self.slots.get(i).is_some_and(|s| s.live && s.gen == gen);
            match outcome {
                Outcome::Ready(svc) if valid => {
                    {
                        let sl = &mut self.slots[i];
                        sl.service = Some(svc);
                        sl.cancel = None;
                        sl.ready = true;
                    }
                    self.reindex(idx, now, true);
                }
                Outcome::Failed(e) if valid => self.evict(idx, e.into()),
                _ => {}
            }
        }
    }

    /// Polls a chosen endpoint; `true` if it is ready.
    fn poll_slot(&mut self, idx: u32, cx: &mut Context<'_>, now: Instant) -> bool
    where
        S::Error: Into<BoxError>,
    {
        let Some(svc) = self.slots[idx as usize].service.as_mut() else {
            return false;
        };
        match svc.poll_ready(cx) {
            Poll::Ready(Ok(())) => true,
            Poll::Pending => {
                self.park(idx, now);
                false
            }
            Poll::Ready(Err(e)) => {
                self.evict(idx, e.into());
                false
            }
        }
    }

    // ===== routing =====

    fn recompute(&mut self) {
        self.routing_dirty = false;
        let threshold = self.config.healthy_panic_threshold;
        let op = self.config.overprovisioning_factor;
        let nloc = self.localities.len();
        let active = match self.policy {
            Policy::Avoid(_) => Some(self.active_per_location()),
            _ => None,
        };
        for s in 0..self.plans.len() {
            let plan = &self.plans[s];
            let counts: Vec<LevelCounts> = plan
                .levels
                .iter()
                .map(|lv| LevelCounts {
                    total: lv.total,
                    healthy: lv.tiers[0].len() as u32,
                    degraded: lv.tiers[1].len() as u32,
                })
                .collect();
            let loads = priority_loads(&counts, self.overprovisioning, threshold);
            let mut healthy_routes = Vec::with_capacity(plan.levels.len());
            let mut degraded_routes = Vec::with_capacity(plan.levels.len());
            for (p, level) in plan.levels.iter().enumerate() {
                let totals: Vec<u32> = level.locs.iter().map(|b| b.total).collect();
                let avail = |t: usize| -> Vec<u32> {
                    level.locs.iter().map(|b| b.tiers[t].len() as u32).collect()
                };
                let weights: Vec<f64> = level.locs.iter().map(|b| b.weight as f64).collect();
                let healthy = avail(0);
                let route = match self.policy {
                    Policy::None => Route::Any,
                    Policy::ZoneAware(z) => match (&self.local_cluster, self.local_loc) {
                        (Some(lc), Some(local)) if p == 0 => Route::Zone(zone_route(&ZoneInputs {
                            upstream_total: &totals,
                            upstream_healthy: &healthy,
                            local_total: &lc.total,
                            local_healthy: &lc.healthy,
                            local,
                            min_cluster_size: z.min_cluster_size,
                            panic_threshold: threshold,
                        })),
                        _ => Route::Any,
                    },
                    Policy::Weighted => {
                        Route::Weighted(locality_weights(&weights, &totals, &healthy, op, None))
                    }
                    Policy::PreferLocal => {
                        let local = self.local_loc.unwrap_or(0);
                        let l = local as usize;
                        let others = locality_weights(&weights, &totals, &healthy, op, Some(l));
                        let (t, a) = (
                            totals.get(l).copied().unwrap_or(0),
                            healthy.get(l).copied().unwrap_or(0),
                        );
                        let share = if a == 0 {
                            0.0
                        } else if others.is_empty() {
                            1.0
                        } else {
                            (op * f64::from(a) / f64::from(t)).min(1.0)
                        };
                        Route::PreferLocal {
                            local,
                            share,
                            others,
                        }
                    }
                    Policy::Avoid(z) => {
                        let zero = vec![0u64; nloc];
                        let act = active
                            .as_ref()
                            .and_then(|a| a.get(s).and_then(|v| v.get(p)))
                            .unwrap_or(&zero);
                        let rng = &mut self.rng;
                        Route::Avoid(available_zones(
                            &totals,
                            &healthy,
                            act,
                            z.trigger_load_per_server,
                            z.blackout,
                            |worst| below(rng, worst.len()),
                        ))
                    }
                };
                healthy_routes.push(route);
                degraded_routes.push(match self.policy {
                    Policy::Weighted => {
                        Route::Weighted(locality_weights(&weights, &totals, &avail(1), op, None))
                    }
                    _ => Route::Any,
                });
            }
            let plan = &mut self.plans[s];
            plan.loads = loads;
            plan.healthy_routes = healthy_routes;
            plan.degraded_routes = degraded_routes;
        }
        self.publish();
    }

    /// Requests in flight per subset, level and locality (for zone
    /// avoidance).
    fn active_per_location(&self) -> Vec<Vec<Vec<u64>>> {
        let nloc = self.localities.len();
        let mut out: Vec<Vec<Vec<u64>>> = self
            .plans
            .iter()
            .map(|p| vec![vec![0u64; nloc]; p.levels.len()])
            .collect();
        for sl in self.slots.iter().filter(|s| s.live) {
            out[sl.subset][sl.prio][sl.loc as usize] +=
                u64::from(sl.tracker.stats.active.load(Relaxed));
        }
        out
    }

    fn publish(&mut self) {
        let zone_routing = match self.plans[0].healthy_routes.first() {
            Some(Route::Zone(ZoneRoute::Direct { .. })) => ZoneRouting::Local,
            Some(Route::Zone(ZoneRoute::Residual { local_bp, .. })) => ZoneRouting::Sampled {
                local_share: *local_bp as f64 / BASIS as f64,
            },
            Some(Route::Zone(ZoneRoute::Off(r))) => ZoneRouting::Off(*r),
            _ => ZoneRouting::NotConfigured,
        };
        self.metrics.local_share.set(match zone_routing {
            ZoneRouting::Local => 1.0,
            ZoneRouting::Sampled { local_share } => local_share,
            _ => 0.0,
        });
        for (l, counts) in self.zone_counts.iter().enumerate() {
            for (g, state) in self.metrics.zones[l].iter().zip(EndpointState::ALL) {
                g.set(counts.get(state) as f64);
            }
        }
        let mut view = self.shared.view.lock();
        if view.zone_routing != zone_routing {
            tracing::debug!(
                target: "watertight_loadbalance",
                name = %self.shared.name,
                from = ?view.zone_routing,
                to = ?zone_routing,
                "zone routing changed"
            );
        }
        view.endpoints = self.live;
        view.zone_routing = zone_routing;
        view.zones.clear();
        for (l, counts) in self.zone_counts.iter().enumerate() {
            let zone = &self.localities[l].zone;
            let entry = view.zones.entry(zone.clone()).or_default();
            for state in EndpointState::ALL {
                *entry.get_mut(state) += counts.get(state);
            }
        }
        drop(view);
        if self.membership_changed {
            self.membership_changed = false;
            let list: Vec<Arc<dyn StatusSource>> = self
                .slots
                .iter()
                .filter(|s| s.live)
                .map(|s| s.tracker.clone() as Arc<dyn StatusSource>)
                .collect();
            *self.shared.endpoints.lock() = list;
        }
    }

    fn choose_subset(&mut self, r: f64) -> usize {
        let s = self
            .subset_cum
            .iter()
            .find(|&&(c, _)| r < c)
            .map_or(0, |&(_, s)| s);
        self.usable_subset(s)
    }

    /// `s` if it has a ready endpoint, else the default subset, else any
    /// that has one.
    fn usable_subset(&self, s: usize) -> usize {
        if self.plans[s].has_ready() {
            return s;
        }
        if self.plans[0].has_ready() {
            return 0;
        }
        self.plans.iter().position(Plan::has_ready).unwrap_or(s)
    }

    /// The group (and decision) for a request in subset `s`, given a draw
    /// `r` in `0..100` for the priority level.
    fn route(&mut self, s: usize, r: u32) -> Option<Result<(GroupRef, Decision), u8>> {
        let plan = &self.plans[s];
        let choice = plan.loads.choose(r);
        let Some((p, tier)) = choice else {
            // No load anywhere (every level empty or unavailable): any
            // ready endpoint.
            let p = plan.levels.iter().position(|l| !l.panic.is_empty())?;
            return Some(Ok((GroupRef::Panic { s, p }, Decision::Panic)));
        };
        if plan.loads.total_panic || plan.loads.panic.get(p).copied().unwrap_or(false) {
            if self.config.fail_traffic_on_panic && !plan.levels[p].panic.is_empty() {
                return Some(Err(p as u8));
            }
            return Some(Ok((GroupRef::Panic { s, p }, Decision::Panic)));
        }
        let routes = match tier {
            Tier::Healthy => &plan.healthy_routes,
            Tier::Degraded => &plan.degraded_routes,
        };
        let bp = match self.policy {
            Policy::ZoneAware(z) => (z.routing_enabled * 100.0).round() as u64,
            _ => BASIS,
        };
        let drawn = routes
            .get(p)
            .and_then(|route| draw(route, &mut self.rng, self.local_loc, bp));
        let (mut g, mut decision) = match drawn {
            Some((l, d)) => (GroupRef::Bucket { s, p, l, t: tier }, d),
            None => (GroupRef::Tier { s, p, t: tier }, Decision::Any),
        };
        let plans = &self.plans;
        if group(plans, g).is_empty() {
            g = GroupRef::Tier { s, p, t: tier };
            decision = Decision::Any;
        }
        if group(plans, g).is_empty() {
            g = GroupRef::Panic { s, p };
            decision = Decision::Panic;
        }
        if group(plans, g).is_empty() {
            let p = plans[s].levels.iter().position(|l| !l.panic.is_empty())?;
            g = GroupRef::Panic { s, p };
        }
        Some(Ok((g, decision)))
    }

    /// Picks within `g`; `exclude` lists endpoints to avoid.
    fn pick_in(
        &mut self,
        g: GroupRef,
        now: Instant,
        exclude: Option<&[EndpointId]>,
    ) -> Option<u32> {
        let tau = self.hooks.tau_ns;
        let weighted = group(&self.plans, g).weighted();
        let pick = self.config.pick;
        if weighted {
            let slots = &self.slots;
            let ss = self.config.slow_start;
            let bias = self.bias();
            let weight = |s: u32| edf_weight(&slots[s as usize], now, ss.as_ref(), bias);
            let excluded =
                |s: u32| exclude.is_some_and(|ids| ids.contains(&slots[s as usize].endpoint.id));
            return group_mut(&mut self.plans, g).edf(
                |s| slots[s as usize].epoch,
                weight,
                excluded,
            );
        }
        let slots = &self.slots;
        let grp = group_mut(&mut self.plans, g);
        grp.clear_edf();
        let excluded =
            |s: u32| exclude.is_some_and(|ids| ids.contains(&slots[s as usize].endpoint.id));
        match pick {
            Pick::RoundRobin => grp.round_robin(excluded),
            Pick::P2c {
                load: Load::LeastRequests,
            } => {
                let active = |s: u32| slots[s as usize].tracker.stats.active.load(Relaxed);
                let less = |a: u32, b: u32| active(a) < active(b);
                match exclude {
                    None => grp.p2c(&mut self.rng, less),
                    Some(_) => grp.p2c_excluding(&mut self.rng, less, excluded),
                }
            }
            _ => {
                let stats = |s: u32| &slots[s as usize].tracker.stats;
                let less = |a: u32, b: u32| stats(a).cheaper(stats(b), tau);
                match exclude {
                    None => grp.p2c(&mut self.rng, less),
                    Some(_) => grp.p2c_excluding(&mut self.rng, less, excluded),
                }
            }
        }
    }

    /// The provisional pick of `poll_ready`.
    fn pick(&mut self, now: Instant) -> Option<Chosen> {
        let r = if self.subset_cum.is_empty() {
            0.0
        } else {
            unit(&mut self.rng)
        };
        let s = self.choose_subset(r);
        let rp = below(&mut self.rng, 100) as u32;
        let (g, decision) = match self.route(s, rp)? {
            Ok(x) => x,
            Err(priority) => return Some(Chosen::Fail { priority }),
        };
        let idx = self.pick_in(g, now, None)?;
        let sl = &self.slots[idx as usize];
        Some(Chosen::Slot {
            idx,
            gen: sl.gen,
            epoch: sl.epoch,
            group: g,
            decision,
        })
    }

    fn chosen_valid(&self, c: &Chosen) -> bool {
        match *c {
            Chosen::Fail { .. } => true,
            Chosen::Slot {
                idx, gen, epoch, ..
            } => {
                let sl = &self.slots[idx as usize];
                sl.live && sl.gen == gen && sl.epoch == epoch && sl.ready
            }
        }
    }

    /// The hash table of subset `s`, level `p`, kind `h`, rebuilt if stale.
    fn ensure_table(&mut self, s: usize, p: usize, h: usize) {
        let version = self.plans[s].hash_version;
        if let Some((v, _)) = &self.plans[s].levels[p].hash[h] {
            if *v == version {
                return;
            }
        }
        let members: Vec<Member<'_>> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, sl)| {
                sl.live
                    && sl.subset == s
                    && sl.prio == p
                    && match h {
                        H_ALL => true,
                        t => {
                            !sl.ejected
                                && tier_of(sl.endpoint.health).map(|x| x as usize) == Some(t)
                        }
                    }
            })
            .map(|(i, sl)| Member {
                slot: i as u32,
                id: sl.endpoint.id.as_str(),
                weight: sl.endpoint.weight,
            })
            .collect();
        let table = match self.config.pick {
            Pick::Maglev(m) => Table::Maglev(MaglevTable::build(&members, m.table_size)),
            Pick::RingHash(r) => {
                Table::Ring(Ring::build(&members, r.min_ring_size, r.max_ring_size))
            }
            _ => return,
        };
        self.plans[s].levels[p].hash[h] = Some((version, table));
    }

    fn pick_hashed(
        &mut self,
        key: u64,
        subset: Option<usize>,
        exclude: Option<&[EndpointId]>,
    ) -> Option<u32> {
        let h = mix(key);
        let s = match subset {
            Some(s) => self.usable_subset(s),
            None => {
                let r = (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
                self.choose_subset(r)
            }
        };
        let plan = &self.plans[s];
        let (p, kind) = match plan.loads.choose((mix(h ^ 0x9e37_79b9) % 100) as u32) {
            None => (plan.levels.iter().position(|l| !l.panic.is_empty())?, H_ALL),
            Some((p, _)) if plan.loads.total_panic || plan.loads.panic[p] => (p, H_ALL),
            Some((p, t)) => (p, t as usize),
        };
        self.ensure_table(s, p, kind);
        let (_, table) = self.plans[s].levels[p].hash[kind].as_ref()?;
        for attempt in 0..16 {
            let c = table.candidate(h, attempt)?;
            let sl = &self.slots[c as usize];
            if sl.live && sl.ready && !exclude.is_some_and(|ids| ids.contains(&sl.endpoint.id)) {
                return Some(c);
            }
        }
        None
    }

    /// Whether a slot picked in `call` can take the request now (polled with
    /// a no-op waker: a pending one waits in `pending`, whose next poll
    /// registers the real waker).
    fn ready_now(&mut self, idx: u32, now: Instant) -> bool
    where
        S::Error: Into<BoxError>,
    {
        let mut cx = Context::from_waker(Waker::noop());
        let sl = &self.slots[idx as usize];
        if !sl.live || !sl.ready {
            return false;
        }
        self.poll_slot(idx, &mut cx, now)
    }

    /// The pick `call` makes for what only the request says.
    #[allow(clippy::too_many_arguments)]
    fn repick(
        &mut self,
        key: Option<u64>,
        subset: Option<usize>,
        tried: Option<&[EndpointId]>,
        provisional: u32,
        group_of: GroupRef,
        decision: Decision,
        now: Instant,
    ) -> Option<(u32, Decision)> {
        if let Some(key) = key {
            return self
                .pick_hashed(key, subset, tried)
                .map(|i| (i, Decision::Any));
        }
        if let Some(s) = subset {
            if s != self.slots[provisional as usize].subset {
                let s = self.usable_subset(s);
                let rp = below(&mut self.rng, 100) as u32;
                let (g, d) = self.route(s, rp)?.ok()?;
                return self.pick_in(g, now, tried).map(|i| (i, d));
            }
        }
        let tried = tried?;
        if tried.contains(&self.slots[provisional as usize].endpoint.id) {
            return self
                .pick_in(group_of, now, Some(tried))
                .map(|i| (i, decision));
        }
        None
    }

    // ===== outlier detection =====

    fn schedule(&mut self, at: Instant, kind: TimerKind) {
        self.timer_seq += 1;
        self.timers.push(Reverse(Timer {
            at,
            seq: self.timer_seq,
            kind,
        }));
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|t| t.0.at)
    }

    fn log(&mut self, idx: u32, at: Instant, action: OutlierAction) {
        let sl = &self.slots[idx as usize];
        let event = OutlierEvent {
            name: self.shared.name.clone(),
            at,
            endpoint: sl.endpoint.id.clone(),
            locality: sl.endpoint.locality.clone(),
            action,
        };
        if let Some(d) = action.detection() {
            let what = match action {
                OutlierAction::Ejected { .. } => "ejected",
                OutlierAction::NotEnforced { .. } => "not_enforced",
                _ => "overflow",
            };
            let mut l = self.metrics.labels.clone();
            l.push(Label::new("detection", d.as_str()));
            l.push(Label::new("action", what));
            metrics::counter!("watertight_loadbalance_ejections_total", l).increment(1);
        }
        match action {
            OutlierAction::Ejected { .. } | OutlierAction::Unejected => tracing::info!(
                target: "watertight_loadbalance",
                name = %self.shared.name,
                endpoint = %event.endpoint,
                zone = %event.locality.zone,
                "{action}"
            ),
            _ => tracing::debug!(
                target: "watertight_loadbalance",
                name = %self.shared.name,
                endpoint = %event.endpoint,
                "{action}"
            ),
        }
        {
            let mut log = self.shared.log.lock();
            if self.shared.log_capacity > 0 {
                if log.len() == self.shared.log_capacity {
                    log.pop_front();
                }
                log.push_back(event.clone());
            }
        }
        self.emit(Event::Outlier(event));
    }

    fn try_eject(&mut self, idx: u32, detection: Detection, now: Instant) {
        let config = self.config.clone();
        let Some(od) = config.outlier_detection.as_ref() else {
            return;
        };
        let i = idx as usize;
        if !self.slots[i].live || self.slots[i].ejected {
            return;
        }
        if !od.may_eject(self.ejected, self.live) {
            self.log(idx, now, OutlierAction::Overflow { detection });
            return;
        }
        let enforcing = match detection {
            Detection::Consecutive5xx => od.enforcing_consecutive_5xx,
            Detection::ConsecutiveGatewayFailure => od.enforcing_consecutive_gateway_failure,
            Detection::SuccessRate => od.enforcing_success_rate,
            Detection::FailurePercentage => od.enforcing_failure_percentage,
            Detection::Manual => 100,
        };
        if below(&mut self.rng, 100) as u8 >= enforcing {
            self.log(idx, now, OutlierAction::NotEnforced { detection });
            return;
        }
        let k = od.next_multiplier(self.slots[i].k);
        let jitter = od.max_ejection_time_jitter.as_nanos() as u64;
        let jitter = if jitter == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(below(&mut self.rng, jitter as usize + 1) as u64)
        };
        let duration = od.ejection_time(k) + jitter;
        let gen = self.slots[i].gen;
        {
            let sl = &mut self.slots[i];
            sl.ejected = true;
            sl.k = k;
            sl.uneject_at = Some(now + duration);
            sl.tracker.stats.set_multiplier(k);
        }
        self.ejected += 1;
        self.metrics.ejected.set(self.ejected as f64);
        self.schedule(now + duration, TimerKind::Uneject { slot: idx, gen });
        self.reindex(idx, now, false);
        self.log(
            idx,
            now,
            OutlierAction::Ejected {
                detection,
                duration,
                multiplier: k,
            },
        );
    }

    fn uneject(&mut self, idx: u32, now: Instant) {
        let i = idx as usize;
        if !self.slots[i].live || !self.slots[i].ejected {
            return;
        }
        {
            let sl = &mut self.slots[i];
            sl.ejected = false;
            sl.uneject_at = None;
            sl.last_uneject = Some(now);
            sl.tracker.stats.reset_consecutive();
        }
        self.ejected -= 1;
        self.metrics.ejected.set(self.ejected as f64);
        self.reindex(idx, now, false);
        self.log(idx, now, OutlierAction::Unejected);
    }

    fn process_requests(&mut self, now: Instant) {
        self.shared
            .dirty
            .store(false, std::sync::atomic::Ordering::Release);
        let requests = std::mem::take(&mut *self.shared.requests.lock());
        for r in requests {
            match r {
                Request::Eject {
                    slot,
                    gen,
                    detection,
                } => {
                    if self
                        .slots
                        .get(slot as usize)
                        .is_some_and(|s| s.live && s.gen == gen)
                    {
                        self.try_eject(slot, detection, now);
                    }
                }
                Request::ManualEject(id) => {
                    if let Some(&idx) = self.by_id.get(&id) {
                        self.try_eject(idx, Detection::Manual, now);
                    }
                }
                Request::ManualUneject(id) => {
                    if let Some(&idx) = self.by_id.get(&id) {
                        self.uneject(idx, now);
                    }
                }
            }
        }
    }

    /// One outlier-detection interval: `k` decays, then the success-rate
    /// and failure-percentage detectors run on the interval's counts.
    fn sweep(&mut self, now: Instant, ticks: u32) {
        let config = self.config.clone();
        let Some(od) = config.outlier_detection.as_ref() else {
            return;
        };
        let mut counts: Vec<(u32, u64, u64)> = Vec::with_capacity(self.live);
        for (i, sl) in self.slots.iter_mut().enumerate() {
            if !sl.live {
                continue;
            }
            if !sl.ejected && sl.k > 0 {
                if let Some(t) = sl.last_uneject {
                    let since = now.saturating_duration_since(t);
                    let due =
                        (since.as_nanos() / od.interval.as_nanos()).min(u128::from(ticks)) as u32;
                    if due > 0 {
                        sl.k = sl.k.saturating_sub(due);
                        sl.tracker.stats.set_multiplier(sl.k);
                    }
                }
            }
            let (calls, ok) = sl.tracker.stats.take_interval();
            counts.push((i as u32, calls, ok));
        }
        let valid: Vec<(u32, f64)> = counts
            .iter()
            .filter(|c| c.1 >= od.success_rate_request_volume)
            .map(|&(i, calls, ok)| (i, 100.0 * ok as f64 / calls as f64))
            .collect();
        if valid.len() >= od.success_rate_minimum_hosts as usize && !valid.is_empty() {
            let rates: Vec<f64> = valid.iter().map(|v| v.1).collect();
            let threshold =
                crate::outlier::success_rate_threshold(&rates, od.success_rate_stdev_factor);
            for &(i, rate) in &valid {
                if rate < threshold {
                    self.try_eject(i, Detection::SuccessRate, now);
                }
            }
        }
        let valid: Vec<(u32, f64)> = counts
            .iter()
            .filter(|c| c.1 >= od.failure_percentage_request_volume)
            .map(|&(i, calls, ok)| (i, 100.0 * (calls - ok) as f64 / calls as f64))
            .collect();
        if valid.len() >= od.failure_percentage_minimum_hosts as usize && !valid.is_empty() {
            for &(i, failed) in &valid {
                if failed >= f64::from(od.failure_percentage_threshold) {
                    self.try_eject(i, Detection::FailurePercentage, now);
                }
            }
        }
    }

    fn on_timers(&mut self, now: Instant) {
        while let Some(Reverse(t)) = self.timers.peek().copied() {
            if t.at > now {
                break;
            }
            self.timers.pop();
            match t.kind {
                TimerKind::Sweep => {
                    let interval = self
                        .config
                        .outlier_detection
                        .as_ref()
                        .map_or(Duration::from_secs(10), |o| o.interval);
                    let behind = now.saturating_duration_since(t.at);
                    let ticks = 1 + (behind.as_nanos() / interval.as_nanos()) as u32;
                    self.sweep(now, ticks);
                    let next = t.at + interval * ticks;
                    self.schedule(next, TimerKind::Sweep);
                }
                TimerKind::Refresh => {
                    self.routing_dirty = true;
                    if let Policy::Avoid(z) = self.policy {
                        self.schedule(now + z.refresh, TimerKind::Refresh);
                    }
                }
                TimerKind::Uneject { slot, gen } => {
                    let due = self.slots.get(slot as usize).is_some_and(|s| {
                        s.live
                            && s.gen == gen
                            && s.ejected
                            && s.uneject_at.is_some_and(|u| u <= now)
                    });
                    if due {
                        self.uneject(slot, now);
                    }
                }
                TimerKind::RampEnd { slot, gen } => {
                    if self
                        .slots
                        .get(slot as usize)
                        .is_some_and(|s| s.live && s.gen == gen)
                    {
                        self.reindex(slot, now, true);
                    }
                }
            }
        }
    }

    fn start(&mut self, now: Instant) {
        self.started = true;
        if let Some(od) = &self.config.outlier_detection {
            let at = now + od.interval;
            self.schedule(at, TimerKind::Sweep);
        }
        if let Policy::Avoid(z) = self.policy {
            self.schedule(now + z.refresh, TimerKind::Refresh);
        }
    }

    /// Registers for every wake-up that could make the balancer ready.
    fn arm(&mut self, cx: &mut Context<'_>) {
        self.shared.waker.register(cx.waker());
        if self.shared.dirty.load(std::sync::atomic::Ordering::Acquire) {
            cx.waker().wake_by_ref();
        }
        if let Some(at) = self.next_deadline() {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if sleep.deadline() != at {
                sleep.as_mut().reset(at);
            }
            if sleep.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
    }

    fn count(&self, d: Decision) {
        self.shared.decisions[d as usize].fetch_add(1, Relaxed);
        self.metrics.decisions[d as usize].increment(1);
    }
}

impl<S, Req> Service<Req> for Balancer<S, Req>
where
    S: Service<Req>,
    S::Response: 'static,
    S::Error: Into<BoxError> + 'static,
    Req: Extensions,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let now = Instant::now();
        if !self.started {
            self.start(now);
        }
        self.poll_discovery(cx, now);
        if !self.pending.is_empty() {
            self.poll_pending(cx, now);
        }
        if self.shared.dirty.load(std::sync::atomic::Ordering::Acquire) {
            self.process_requests(now);
        }
        if self.next_deadline().is_some_and(|d| d <= now) {
            self.on_timers(now);
        }
        if self.routing_dirty || self.membership_changed {
            self.recompute();
        }
        // A choice not yet called is polled again: its readiness may have
        // been withdrawn since.
        if let Some(c) = self.chosen.take() {
            match c {
                Chosen::Fail { .. } => {
                    self.chosen = Some(c);
                    return Poll::Ready(Ok(()));
                }
                Chosen::Slot { idx, .. }
                    if self.chosen_valid(&c) && self.poll_slot(idx, cx, now) =>
                {
                    self.chosen = Some(c);
                    return Poll::Ready(Ok(()));
                }
                Chosen::Slot { .. } => {
                    if self.routing_dirty {
                        self.recompute();
                    }
                }
            }
        }
        // Each round parks or evicts an endpoint, or takes back one that
        // woke; a service that flips between ready and not on every poll
        // could go on for ever, so the rounds are bounded.
        let mut rounds = 2 * self.live + 8;
        loop {
            if rounds == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            rounds -= 1;
            match self.pick(now) {
                Some(c @ Chosen::Fail { .. }) => {
                    self.chosen = Some(c);
                    return Poll::Ready(Ok(()));
                }
                Some(c @ Chosen::Slot { idx, .. }) => {
                    if self.poll_slot(idx, cx, now) {
                        let sl = &self.slots[idx as usize];
                        // Polling cannot re-index a ready endpoint, but keep
                        // the epoch current for `chosen_valid`.
                        self.chosen = Some(match c {
                            Chosen::Slot {
                                group, decision, ..
                            } => Chosen::Slot {
                                idx,
                                gen: sl.gen,
                                epoch: sl.epoch,
                                group,
                                decision,
                            },
                            other => other,
                        });
                        return Poll::Ready(Ok(()));
                    }
                }
                None => {
                    if self.parked {
                        // Endpoints parked in this poll have not registered
                        // our waker yet.
                        self.poll_pending(cx, now);
                    } else {
                        self.arm(cx);
                        return Poll::Pending;
                    }
                }
            }
            if self.routing_dirty {
                self.recompute();
            }
        }
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let chosen = self
            .chosen
            .take()
            .expect("Balancer::call before poll_ready returned Ready");
        let (mut idx, group_of, mut decision) = match chosen {
            Chosen::Fail { priority } => {
                return ResponseFuture::failed(NoHealthyEndpoints::new(priority).into());
            }
            Chosen::Slot {
                idx,
                group,
                decision,
                ..
            } => (idx, group, decision),
        };
        let attempted = req.extension::<Attempted>().cloned();
        let key = self.hash_key.as_ref().and_then(|f| f(&req));
        let subset = self
            .subset_override
            .as_ref()
            .and_then(|f| f(&req))
            .and_then(|v| {
                self.subset_values
                    .iter()
                    .position(|x| x == v)
                    .map(|i| i + 1)
            });
        let tried: Option<Vec<EndpointId>> = attempted
            .as_ref()
            .filter(|a| !a.is_empty())
            .map(Attempted::ids);
        if key.is_some() || subset.is_some() || tried.is_some() {
            let now = Instant::now();
            if let Some((alt, d)) =
                self.repick(key, subset, tried.as_deref(), idx, group_of, decision, now)
            {
                if alt != idx && self.ready_now(alt, now) {
                    // The provisional endpoint stays reserved for the next
                    // request.
                    self.chosen = Some(chosen);
                    idx = alt;
                    decision = d;
                } else if alt == idx {
                    decision = d;
                }
            }
        }
        self.count(decision);
        let sl = &mut self.slots[idx as usize];
        if let Some(a) = &attempted {
            a.record(sl.endpoint.id.clone());
        }
        req.insert_extension(sl.selected.clone());
        let tracker = sl.tracker.clone();
        tracker.stats.active.fetch_add(1, Relaxed);
        let start = Instant::now();
        let future = sl
            .service
            .as_mut()
            .expect("a chosen endpoint keeps its service until called")
            .call(req);
        ResponseFuture::called(future, tracker, start)
    }
}

impl<S, Req> fmt::Debug for Balancer<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("name", &self.shared.name)
            .field("endpoints", &self.live)
            .field("ejected", &self.ejected)
            .field("not_ready", &self.pending.len())
            .finish_non_exhaustive()
    }
}
