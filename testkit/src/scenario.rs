//! The resilience scenarios: one topology, seven kinds of trouble, any stack.
//!
//! The topology: nine [`SimBackend`]s in zones `a`, `b` and `c` (three
//! each), baseline latency log-normal with a 10 ms median and a 30 ms p99,
//! each with a fixed capacity; three clients, one per zone, each with its own
//! instance of the stack under test and a third of the offered load (so every
//! zone-wide fault hits some client's own zone); the local cluster (for
//! zone-aware routing) is those three clients. Offered load is half the
//! backends' capacity. Every stack gets the same per-try timeout and maximum
//! attempts through its [`ClientContext`].
//!
//! The scenarios (a fault starts after a warm-up and the run ends with a
//! tail, so recovery counts too):
//!
//! | scenario | what happens |
//! |---|---|
//! | `steady` | nothing |
//! | `zone-outage` | zone `c` answers 503 for 30 s |
//! | `zone-blackhole` | zone `c` never answers for 30 s |
//! | `gray-failure` | one endpoint is 20× slower, without errors |
//! | `flapping` | one endpoint alternates 5 s healthy / 5 s failing |
//! | `brownout` | every endpoint fails 60% of requests for 20 s |
//! | `overload` | offered load is twice the capacity for 20 s |
//!
//! The simulation knows nothing about the stack under test: a [`Stack`]
//! builds one client from a [`ClientContext`], and [`run`] measures it.

use std::fmt;
use std::time::Duration;

use futures_util::future::join_all;
use http::{Request, Response};
use serde::Serialize;
use tokio::time::Instant;
use tower::Service;
use watertight_core::{BoxError, Endpoint, Locality};

use crate::backend::{BackendConfig, Fault, Latency, Phase, Script, SimBackend};
use crate::loadgen::{LoadGen, RateProfile};
use crate::report::Report;

/// The simulated world the scenarios run in.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    /// Zone names; one client per zone.
    pub zones: Vec<String>,
    /// Backends in each zone.
    pub backends_per_zone: usize,
    /// Backend latency.
    pub latency: Latency,
    /// Requests each backend works on at once.
    pub capacity: usize,
    /// Offered load as a share of the backends' capacity.
    pub load: f64,
    /// The per-try timeout every stack uses.
    pub per_try_timeout: Duration,
    /// The maximum attempts (first included) every stack uses.
    pub max_attempts: u32,
    /// When the load generator gives up on a request.
    pub give_up_after: Duration,
}

impl Default for Topology {
    /// The topology of the scenario comparison: zones a, b, c with three
    /// backends each, baseline latency, capacity 4 per backend, half load,
    /// a 250 ms per-try timeout and 3 attempts.
    fn default() -> Self {
        Topology {
            zones: ["a", "b", "c"].map(String::from).to_vec(),
            backends_per_zone: 3,
            latency: Latency::BASELINE,
            capacity: 4,
            load: 0.5,
            per_try_timeout: Duration::from_millis(250),
            max_attempts: 3,
            give_up_after: Duration::from_secs(10),
        }
    }
}

impl Topology {
    /// The mean latency of one request on an idle backend.
    pub fn mean_latency(&self) -> Duration {
        self.latency.mean()
    }

    /// Requests per second all backends together can serve.
    pub fn capacity_rps(&self) -> f64 {
        let backends = (self.zones.len() * self.backends_per_zone) as f64;
        backends * self.capacity as f64 / self.mean_latency().as_secs_f64()
    }

    /// The backends' endpoints, zone by zone: ids `a-1`, `a-2`, … on
    /// addresses `10.0.<zone>.<n>:80`.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let mut out = Vec::new();
        for (z, zone) in self.zones.iter().enumerate() {
            for n in 1..=self.backends_per_zone {
                let addr = format!("10.0.{}.{}:80", z + 1, n)
                    .parse()
                    .expect("valid address");
                out.push(
                    Endpoint::new(addr)
                        .with_id(format!("{zone}-{n}"))
                        .with_locality(self.locality(zone)),
                );
            }
        }
        out
    }

    /// The locality of `zone`: region `sim`.
    pub fn locality(&self, zone: &str) -> Locality {
        Locality::new("sim", zone)
    }

    /// The clients' own cluster: one client per zone.
    pub fn local_cluster(&self) -> Vec<Endpoint> {
        self.zones
            .iter()
            .enumerate()
            .map(|(z, zone)| {
                let addr = format!("10.1.{}.1:80", z + 1)
                    .parse()
                    .expect("valid address");
                Endpoint::new(addr)
                    .with_id(format!("client-{zone}"))
                    .with_locality(self.locality(zone))
            })
            .collect()
    }
}

/// Which trouble a [`Scenario`] brings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioKind {
    /// Nothing goes wrong.
    Steady,
    /// The last zone answers 503.
    ZoneOutage,
    /// The last zone never answers.
    ZoneBlackhole,
    /// The first endpoint is 20× slower, without errors.
    GrayFailure,
    /// The second zone's first endpoint alternates 5 s healthy, 5 s failing.
    Flapping,
    /// Every endpoint fails 60% of requests.
    Brownout,
    /// Offered load is twice the capacity.
    Overload,
}

impl ScenarioKind {
    /// Every kind, in the order of the comparison.
    pub const ALL: [ScenarioKind; 7] = [
        ScenarioKind::Steady,
        ScenarioKind::ZoneOutage,
        ScenarioKind::ZoneBlackhole,
        ScenarioKind::GrayFailure,
        ScenarioKind::Flapping,
        ScenarioKind::Brownout,
        ScenarioKind::Overload,
    ];

    /// The scenario's name, e.g. `zone-outage`.
    pub const fn name(self) -> &'static str {
        match self {
            ScenarioKind::Steady => "steady",
            ScenarioKind::ZoneOutage => "zone-outage",
            ScenarioKind::ZoneBlackhole => "zone-blackhole",
            ScenarioKind::GrayFailure => "gray-failure",
            ScenarioKind::Flapping => "flapping",
            ScenarioKind::Brownout => "brownout",
            ScenarioKind::Overload => "overload",
        }
    }
}

impl fmt::Display for ScenarioKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scenario: a kind of trouble, when it starts and how long it lasts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scenario {
    /// The trouble.
    pub kind: ScenarioKind,
    /// Healthy time before the fault.
    pub warmup: Duration,
    /// How long the fault lasts.
    pub fault: Duration,
    /// Healthy time after the fault.
    pub tail: Duration,
}

impl Scenario {
    /// The scenario of the comparison: 5 s warm-up, the fault for the time
    /// the table in the [module docs](self) gives, 5 s tail.
    pub fn new(kind: ScenarioKind) -> Self {
        let fault = match kind {
            ScenarioKind::Steady => 20,
            ScenarioKind::ZoneOutage | ScenarioKind::ZoneBlackhole | ScenarioKind::GrayFailure => {
                30
            }
            ScenarioKind::Flapping => 40,
            ScenarioKind::Brownout | ScenarioKind::Overload => 20,
        };
        Scenario {
            kind,
            warmup: Duration::from_secs(5),
            fault: Duration::from_secs(fault),
            tail: Duration::from_secs(5),
        }
    }

    /// Every scenario of the comparison.
    pub fn all() -> Vec<Scenario> {
        ScenarioKind::ALL
            .iter()
            .map(|k| Scenario::new(*k))
            .collect()
    }

    /// The same scenario with every stretch multiplied by `factor` (for short
    /// versions in test suites). Flapping keeps its 5 s period.
    pub fn scaled(mut self, factor: f64) -> Self {
        self.warmup = self.warmup.mul_f64(factor);
        self.fault = self.fault.mul_f64(factor);
        self.tail = self.tail.mul_f64(factor);
        self
    }

    /// The whole run.
    pub fn duration(&self) -> Duration {
        self.warmup + self.fault + self.tail
    }

    fn fault_window(&self) -> (Duration, Duration) {
        (self.warmup, self.warmup + self.fault)
    }

    /// The script of each backend of `topology`, in [`Topology::endpoints`]
    /// order.
    pub fn scripts(&self, topology: &Topology) -> Vec<Script> {
        let endpoints = topology.endpoints();
        let (from, until) = self.fault_window();
        let last_zone = topology.zones.last().cloned().unwrap_or_default();
        let second_zone = topology.zones.get(1).cloned().unwrap_or_default();
        endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let s = Script::healthy();
                match self.kind {
                    ScenarioKind::Steady | ScenarioKind::Overload => s,
                    ScenarioKind::ZoneOutage if e.locality.zone == last_zone => {
                        s.with(Phase::new(from, until, Fault::outage(503)))
                    }
                    ScenarioKind::ZoneBlackhole if e.locality.zone == last_zone => {
                        s.with(Phase::new(from, until, Fault::Hang))
                    }
                    ScenarioKind::GrayFailure if i == 0 => {
                        s.with(Phase::new(from, until, Fault::Slow { factor: 20.0 }))
                    }
                    ScenarioKind::Flapping
                        if e.locality.zone == second_zone && i == topology.backends_per_zone =>
                    {
                        let period = Duration::from_secs(5);
                        let mut s = s;
                        let mut t = from + period;
                        while t < until {
                            s = s.with(Phase::new(t, (t + period).min(until), Fault::outage(503)));
                            t += period * 2;
                        }
                        s
                    }
                    ScenarioKind::Brownout => s.with(Phase::new(
                        from,
                        until,
                        Fault::Errors {
                            rate: 0.6,
                            status: 503,
                        },
                    )),
                    _ => s,
                }
            })
            .collect()
    }

    /// The total offered load over time.
    pub fn rate(&self, topology: &Topology) -> RateProfile {
        let base = topology.capacity_rps() * topology.load;
        match self.kind {
            ScenarioKind::Overload => {
                let (from, until) = self.fault_window();
                RateProfile::constant(base)
                    .then_at(from, topology.capacity_rps() * 2.0)
                    .then_at(until, base)
            }
            _ => RateProfile::constant(base),
        }
    }
}

/// What a stack is given to build one client.
#[derive(Clone, Debug)]
pub struct ClientContext {
    /// The client's zone.
    pub zone: String,
    /// Where the client runs (its region and zone), as its entry in
    /// `local_cluster` says.
    pub locality: Locality,
    /// Every backend, in [`Topology::endpoints`] order.
    pub backends: Vec<SimBackend>,
    /// The clients' own cluster (for zone-aware routing).
    pub local_cluster: Vec<Endpoint>,
    /// The per-try timeout to use.
    pub per_try_timeout: Duration,
    /// The maximum attempts (first included) to use.
    pub max_attempts: u32,
    /// A seed for the stack's randomness.
    pub seed: u64,
}

/// A stack under test: builds the client service one client uses.
pub trait Stack {
    /// The client service.
    type Service: Service<Request<()>, Response = Response<()>, Error = Self::Error, Future = Self::Future>
        + Clone
        + Send
        + 'static;
    /// Its error.
    type Error: Into<BoxError>;
    /// Its future.
    type Future: Send;

    /// The stack's name in reports.
    fn name(&self) -> String;

    /// Builds one client. Called inside the simulation's runtime, so it may
    /// spawn tasks.
    fn client(&self, ctx: &ClientContext) -> Self::Service;
}

/// Runs `scenario` on `topology` against `stack` in virtual time on a fresh
/// runtime, and reports what the three clients saw together.
///
/// Deterministic: the same arguments give the same report.
pub fn run<S: Stack>(scenario: &Scenario, topology: &Topology, stack: &S, seed: u64) -> Report {
    simulate(
        topology,
        &scenario.scripts(topology),
        &scenario.rate(topology),
        scenario.duration(),
        stack,
        seed,
    )
}

/// Runs any trouble on `topology` against `stack`: `scripts` are the
/// backends' faults in [`Topology::endpoints`] order (missing ones are
/// healthy), `rate` the total offered load, shared evenly by the clients,
/// for `duration`. [`run`] is this with a [`Scenario`]'s scripts and load;
/// property tests use it with generated fault schedules.
///
/// Deterministic: the same arguments give the same report.
pub fn simulate<S: Stack>(
    topology: &Topology,
    scripts: &[Script],
    rate: &RateProfile,
    duration: Duration,
    stack: &S,
    seed: u64,
) -> Report {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    rt.block_on(async {
        let epoch = Instant::now();
        let backends: Vec<SimBackend> = topology
            .endpoints()
            .into_iter()
            .enumerate()
            .map(|(i, endpoint)| {
                let mut cfg = BackendConfig::new(endpoint);
                cfg.latency = topology.latency;
                cfg.capacity = topology.capacity;
                cfg.script = scripts.get(i).cloned().unwrap_or_default();
                cfg.seed = seed.wrapping_mul(31).wrapping_add(i as u64 + 1);
                SimBackend::new(cfg, epoch)
            })
            .collect();
        let clients = topology.zones.len().max(1);
        let rate = rate.clone().scaled(1.0 / clients as f64);
        let runs = topology.zones.iter().enumerate().map(|(z, zone)| {
            let ctx = ClientContext {
                zone: zone.clone(),
                locality: topology.locality(zone),
                backends: backends.clone(),
                local_cluster: topology.local_cluster(),
                per_try_timeout: topology.per_try_timeout,
                max_attempts: topology.max_attempts,
                seed: seed.wrapping_mul(1_000_003).wrapping_add(z as u64),
            };
            let service = stack.client(&ctx);
            let gen = LoadGen::new(rate.clone(), duration)
                .seed(seed.wrapping_add(z as u64 * 7919))
                .give_up_after(topology.give_up_after)
                .client_zone(zone);
            async move { gen.run(service, epoch).await }
        });
        let mut records: Vec<_> = join_all(runs).await.into_iter().flatten().collect();
        records.sort_by(|a, b| {
            a.start
                .cmp(&b.start)
                .then_with(|| a.client_zone.cmp(&b.client_zone))
        });
        Report::from_records(&records)
    })
}

/// One row of the comparison: the fields of the `--json` output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScenarioResult {
    /// The scenario's name.
    pub scenario: String,
    /// The stack's name.
    pub stack: String,
    /// Requests sent.
    pub requests: u64,
    /// Share that succeeded.
    pub success_rate: f64,
    /// Median latency of all requests.
    pub p50_ms: f64,
    /// p99 latency of all requests.
    pub p99_ms: f64,
    /// p99.9 latency of all requests.
    pub p999_ms: f64,
    /// p99 latency of the successful requests.
    pub p99_success_ms: f64,
    /// Attempts per request.
    pub attempts_per_request: f64,
    /// Share of successes served in the client's zone.
    pub local_zone_share: f64,
}

impl ScenarioResult {
    /// The row of `report`.
    pub fn new(scenario: ScenarioKind, stack: &str, report: &Report) -> Self {
        ScenarioResult {
            scenario: scenario.name().to_owned(),
            stack: stack.to_owned(),
            requests: report.requests,
            success_rate: report.success_rate,
            p50_ms: report.latency.p50_ms,
            p99_ms: report.latency.p99_ms,
            p999_ms: report.latency.p999_ms,
            p99_success_ms: report.success_latency.p99_ms,
            attempts_per_request: report.attempts_per_request,
            local_zone_share: report.local_zone_share,
        }
    }
}

/// The comparison's output: `{ "seed": …, "results": [ … ] }`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// The seed every run used.
    pub seed: u64,
    /// One row per scenario and stack.
    pub results: Vec<ScenarioResult>,
}

impl Comparison {
    /// The comparison as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a comparison always serialises")
    }

    /// The comparison as a fixed-width table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<15} {:<17} {:>8} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>7}\n",
            "scenario",
            "stack",
            "requests",
            "success%",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "p99 ok",
            "attempts",
            "local%"
        );
        for r in &self.results {
            out.push_str(&format!(
                "{:<15} {:<17} {:>8} {:>10.4} {:>8.1} {:>9.1} {:>9.1} {:>9.1} {:>9.3} {:>7.1}\n",
                r.scenario,
                r.stack,
                r.requests,
                r.success_rate * 100.0,
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
                r.p99_success_ms,
                r.attempts_per_request,
                r.local_zone_share * 100.0
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_capacity() {
        let t = Topology::default();
        // Mean latency of the baseline log-normal is about 11.2 ms.
        let mean = t.mean_latency().as_secs_f64() * 1000.0;
        assert!((mean - 11.18).abs() < 0.05, "{mean}");
        assert!((t.capacity_rps() - 36.0 / 0.01118).abs() < 5.0);
        assert_eq!(t.endpoints().len(), 9);
        assert_eq!(t.endpoints()[4].id.as_str(), "b-2");
        assert_eq!(t.local_cluster()[2].locality.zone, "c");
    }

    #[test]
    fn scripts_put_faults_where_the_scenario_says() {
        let t = Topology::default();
        let faulty = |kind| {
            Scenario::new(kind)
                .scripts(&t)
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.phases().is_empty())
                .map(|(i, _)| t.endpoints()[i].id.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(faulty(ScenarioKind::Steady), Vec::<String>::new());
        assert_eq!(faulty(ScenarioKind::ZoneOutage), ["c-1", "c-2", "c-3"]);
        assert_eq!(faulty(ScenarioKind::ZoneBlackhole), ["c-1", "c-2", "c-3"]);
        assert_eq!(faulty(ScenarioKind::GrayFailure), ["a-1"]);
        assert_eq!(faulty(ScenarioKind::Flapping), ["b-1"]);
        assert_eq!(faulty(ScenarioKind::Brownout).len(), 9);
        let flapping = &Scenario::new(ScenarioKind::Flapping).scripts(&t)[3];
        // 40 s of fault: failing 10–15, 20–25, 30–35, 40–45.
        assert_eq!(flapping.phases().len(), 4);
        assert_eq!(flapping.phases()[0].from, Duration::from_secs(10));
    }

    #[test]
    fn overload_doubles_capacity_in_its_window() {
        let t = Topology::default();
        let s = Scenario::new(ScenarioKind::Overload);
        let r = s.rate(&t);
        assert!((r.at(Duration::from_secs(1)) - t.capacity_rps() * 0.5).abs() < 1e-6);
        assert!((r.at(Duration::from_secs(10)) - t.capacity_rps() * 2.0).abs() < 1e-6);
        assert!((r.at(Duration::from_secs(26)) - t.capacity_rps() * 0.5).abs() < 1e-6);
    }
}
