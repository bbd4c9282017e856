//! The state a controller shares with its layers: the published plan the
//! hot path reads, the running experiments, and their supervision tasks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use metrics::{Counter, Gauge};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::Notify;
use tokio::time::Instant;
use watertight_core::{Endpoint, ResponseClass};

use crate::audit::{Action, Audit, Entry, Origin};
use crate::controller::ExperimentStatus;
use crate::error::{InvalidExperiment, NotFound, StartError};
use crate::experiment::Experiment;
use crate::fault::{Abort, Fault};
use crate::guard::Guard;
use crate::headers::HeaderFaults;
use crate::target::Inspect;

pub(crate) const TARGET: &str = "watertight_chaos";

/// Far enough to be never, near enough to add to an instant.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What the hot path reads: one atomic load of `Shared::armed` decides
/// whether it reads this at all.
#[derive(Default)]
pub(crate) struct Plan {
    /// Running experiments, oldest first.
    pub(crate) experiments: Vec<Arc<Running>>,
    pub(crate) headers: Option<HeaderFaults>,
    /// Some experiment has a steady-state guard: results are observed.
    pub(crate) guarded: bool,
    /// Some experiment has an `unavailable` fault: `poll_ready` rolls.
    pub(crate) unavailable: bool,
}

/// One running experiment.
pub(crate) struct Running {
    pub(crate) id: u64,
    pub(crate) experiment: Experiment,
    pub(crate) origin: Origin,
    /// The etcd revision it came from, in fleet mode.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) revision: i64,
    pub(crate) started_at: SystemTime,
    pub(crate) deadline: Instant,
    /// How long it runs: its duration, or less for a fleet experiment
    /// picked up after it was written.
    pub(crate) life: Duration,
    pub(crate) guard: Option<Guard>,
    pub(crate) matched: AtomicU64,
    pub(crate) injected: AtomicU64,
    pub(crate) ended: AtomicBool,
    /// Woken when the experiment ends: hung requests and unavailable
    /// services resume.
    pub(crate) end: Arc<Notify>,
    trip: Notify,
    trip_reason: Mutex<Option<String>>,
    /// Has a fault that acts on requests (anything but `unavailable`).
    pub(crate) request_faults: bool,
    counters: Vec<Counter>,
}

impl Running {
    /// The guard's verdict: wake the supervisor, which aborts.
    fn trip(&self, reason: String) {
        let mut r = self.trip_reason.lock();
        if r.is_none() {
            *r = Some(reason);
            drop(r);
            self.trip.notify_one();
        }
    }

    pub(crate) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    pub(crate) fn name(&self) -> &str {
        &self.experiment.name
    }

    fn count(&self, fault: usize) {
        self.injected.fetch_add(1, Ordering::Relaxed);
        self.counters[fault].increment(1);
    }

    pub(crate) fn status(&self, now: Instant) -> ExperimentStatus {
        ExperimentStatus {
            experiment: self.experiment.clone(),
            origin: self.origin,
            started_at: self.started_at,
            remaining: self.deadline.saturating_duration_since(now),
            matched: self.matched.load(Ordering::Relaxed),
            injected: self.injected.load(Ordering::Relaxed),
        }
    }
}

/// A slot of `max_active_faults`, given back on drop.
pub(crate) struct ActiveFault(Arc<Shared>);

impl Drop for ActiveFault {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.active.decrement(1.0);
    }
}

impl std::fmt::Debug for ActiveFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ActiveFault")
    }
}

/// The faults one request gets.
#[derive(Default)]
pub(crate) struct Injection {
    pub(crate) delay: Option<Duration>,
    /// The abort, and the experiment (none for a header fault).
    pub(crate) abort: Option<(Abort, Option<Arc<Running>>)>,
    pub(crate) hang: Option<Arc<Running>>,
    pub(crate) throttle: Option<u64>,
    pub(crate) truncate: Option<u64>,
    pub(crate) slot: Option<ActiveFault>,
}

impl Injection {
    /// Adds `fault`; a delay is cut to `left`, the experiment's remaining
    /// life.
    fn apply(&mut self, fault: &Fault, run: &Arc<Running>, rng: &mut SmallRng, left: Duration) {
        match fault {
            Fault::Latency(l) => {
                if self.delay.is_none() {
                    self.delay = Some(l.sample(rng).min(left));
                }
            }
            Fault::Abort(a) => {
                if self.abort.is_none() {
                    self.abort = Some((*a, Some(run.clone())));
                }
            }
            Fault::Hang => {
                if self.hang.is_none() {
                    self.hang = Some(run.clone());
                }
            }
            Fault::Throttle { bytes_per_second } => {
                self.throttle.get_or_insert(*bytes_per_second);
            }
            Fault::Truncate { after_bytes } => {
                self.truncate.get_or_insert(*after_bytes);
            }
            Fault::Unavailable(_) => {}
        }
    }
}

/// An unavailability period of one service.
pub(crate) struct Unavailable {
    pub(crate) sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    pub(crate) ended: std::pin::Pin<Box<tokio::sync::futures::OwnedNotified>>,
    pub(crate) run: Arc<Running>,
    pub(crate) _slot: ActiveFault,
}

impl Unavailable {
    /// Ready when the period is over: its time passed or its experiment
    /// ended.
    pub(crate) fn poll(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        use std::future::Future;
        if self.run.has_ended() || self.ended.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(());
        }
        self.sleep.as_mut().poll(cx)
    }
}

pub(crate) struct SharedMetrics {
    active: Gauge,
    experiments: Gauge,
    skipped: Counter,
    headers: Counter,
}

struct Control {
    running: BTreeMap<String, Slot>,
    next_id: u64,
    headers: Option<HeaderFaults>,
}

struct Slot {
    run: Arc<Running>,
    task: tokio::task::AbortHandle,
}

/// Everything a controller shares with its layers.
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    /// Whether any experiment runs or header faults are on: the one atomic
    /// load of the disabled path.
    pub(crate) armed: AtomicBool,
    pub(crate) plan: Arc<ArcSwap<Plan>>,
    pub(crate) instance: Option<Arc<Endpoint>>,
    active: AtomicUsize,
    max_active: usize,
    seed: Option<u64>,
    streams: AtomicU64,
    pub(crate) max_duration: Duration,
    max_experiments: usize,
    control: Mutex<Control>,
    pub(crate) audit: Audit,
    metrics: SharedMetrics,
}

pub(crate) struct SharedConfig {
    pub(crate) name: Arc<str>,
    pub(crate) instance: Option<Arc<Endpoint>>,
    pub(crate) max_active: Option<usize>,
    pub(crate) seed: Option<u64>,
    pub(crate) max_duration: Duration,
    pub(crate) max_experiments: usize,
    pub(crate) headers: Option<HeaderFaults>,
    pub(crate) audit: Audit,
}

impl Shared {
    pub(crate) fn new(c: SharedConfig) -> Arc<Shared> {
        let label = || [("name", c.name.to_string())];
        let metrics = SharedMetrics {
            active: metrics::gauge!("watertight_chaos_active_faults", &label()),
            experiments: metrics::gauge!("watertight_chaos_experiments", &label()),
            skipped: metrics::counter!("watertight_chaos_faults_skipped_total", &label()),
            headers: metrics::counter!(
                "watertight_chaos_faults_injected_total",
                "name" => c.name.to_string(),
                "experiment" => "headers"
            ),
        };
        metrics.active.set(0.0);
        metrics.experiments.set(0.0);
        let shared = Arc::new(Shared {
            name: c.name,
            armed: AtomicBool::new(false),
            plan: Arc::new(ArcSwap::from_pointee(Plan::default())),
            instance: c.instance,
            active: AtomicUsize::new(0),
            max_active: c.max_active.unwrap_or(usize::MAX),
            seed: c.seed,
            streams: AtomicU64::new(0),
            max_duration: c.max_duration,
            max_experiments: c.max_experiments,
            control: Mutex::new(Control {
                running: BTreeMap::new(),
                next_id: 1,
                headers: c.headers,
            }),
            audit: c.audit,
            metrics,
        });
        shared.publish(&shared.control.lock());
        shared
    }

    /// A generator for one service: seeded streams are numbered in the
    /// order services are made, so a seeded setup replays exactly.
    pub(crate) fn rng(&self) -> SmallRng {
        match self.seed {
            Some(seed) => {
                let stream = self.streams.fetch_add(1, Ordering::Relaxed);
                SmallRng::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            }
            None => SmallRng::from_rng(&mut rand::rng()),
        }
    }

    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    fn try_acquire(self: &Arc<Self>) -> Option<ActiveFault> {
        let mut n = self.active.load(Ordering::Acquire);
        loop {
            if n >= self.max_active {
                self.metrics.skipped.increment(1);
                return None;
            }
            match self
                .active
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.metrics.active.increment(1.0);
                    return Some(ActiveFault(self.clone()));
                }
                Err(actual) => n = actual,
            }
        }
    }

    /// The faults for one request; `None` when there are none, or
    /// `max_active_faults` are active. `body`: the service can act on
    /// response bodies.
    pub(crate) fn decide<R: Inspect + ?Sized>(
        self: &Arc<Self>,
        plan: &Plan,
        req: &R,
        rng: &mut SmallRng,
        body: bool,
    ) -> Option<Injection> {
        let mut inj: Option<Injection> = None;
        let mut now: Option<Instant> = None;
        for run in &plan.experiments {
            if !run.request_faults || !run.experiment.target.matches(req, self.instance.as_deref())
            {
                continue;
            }
            run.matched.fetch_add(1, Ordering::Relaxed);
            for (i, spec) in run.experiment.faults.iter().enumerate() {
                let applies = match &spec.fault {
                    Fault::Unavailable(_) => false,
                    f => body || !f.is_body(),
                };
                if !applies || !spec.percent.roll(rng) {
                    continue;
                }
                // Never inject past the end, even if the supervisor is late.
                let t = *now.get_or_insert_with(Instant::now);
                if t >= run.deadline || run.has_ended() {
                    break;
                }
                let inj = match &mut inj {
                    Some(inj) => inj,
                    None => inj.insert(Injection {
                        slot: Some(self.try_acquire()?),
                        ..Injection::default()
                    }),
                };
                inj.apply(&spec.fault, run, rng, run.deadline - t);
                run.count(i);
            }
        }
        if let Some(h) = &plan.headers {
            let asked = h.read(req);
            if !asked.is_empty() {
                self.apply_headers(&mut inj, asked, rng, body)?;
            }
        }
        inj
    }

    fn apply_headers(
        self: &Arc<Self>,
        inj: &mut Option<Injection>,
        asked: crate::headers::Asked,
        rng: &mut SmallRng,
        body: bool,
    ) -> Option<()> {
        let delay = asked.delay.filter(|(_, p)| p.roll(rng)).map(|(d, _)| d);
        let abort = match (asked.abort_http, asked.abort_grpc) {
            (Some((s, p)), _) => p.roll(rng).then_some(Abort::Http(s)),
            (None, Some((g, p))) => p.roll(rng).then_some(Abort::Grpc(g)),
            (None, None) => None,
        };
        let throttle = asked.throttle.filter(|_| body);
        let truncate = asked.truncate.filter(|_| body);
        if delay.is_none() && abort.is_none() && throttle.is_none() && truncate.is_none() {
            return Some(());
        }
        let inj = match inj {
            Some(inj) => inj,
            None => inj.insert(Injection {
                slot: Some(self.try_acquire()?),
                ..Injection::default()
            }),
        };
        if inj.delay.is_none() {
            inj.delay = delay;
        }
        if inj.abort.is_none() {
            inj.abort = abort.map(|a| (a, None));
        }
        if inj.throttle.is_none() {
            inj.throttle = throttle;
        }
        if inj.truncate.is_none() {
            inj.truncate = truncate;
        }
        self.metrics.headers.increment(1);
        Some(())
    }

    /// An unavailability period for a service bound to this controller's
    /// instance, if an `unavailable` fault fires.
    pub(crate) fn decide_unavailable(
        self: &Arc<Self>,
        plan: &Plan,
        rng: &mut SmallRng,
    ) -> Option<Unavailable> {
        let mut now: Option<Instant> = None;
        for run in &plan.experiments {
            if !run
                .experiment
                .target
                .matches_endpoint(self.instance.as_deref())
            {
                continue;
            }
            for (i, spec) in run.experiment.faults.iter().enumerate() {
                let Fault::Unavailable(d) = spec.fault else {
                    continue;
                };
                if !spec.percent.roll(rng) {
                    continue;
                }
                let t = *now.get_or_insert_with(Instant::now);
                if t >= run.deadline || run.has_ended() {
                    break;
                }
                let ended = Box::pin(run.end.clone().notified_owned());
                if run.has_ended() {
                    break;
                }
                let slot = self.try_acquire()?;
                run.count(i);
                return Some(Unavailable {
                    // Never past the experiment's end.
                    sleep: Box::pin(tokio::time::sleep(d.min(run.deadline - t))),
                    ended,
                    run: run.clone(),
                    _slot: slot,
                });
            }
        }
        None
    }

    /// Publishes the plan for the control state: plan before the flag when
    /// arming, flag before the plan when disarming, so the hot path never
    /// skips a plan it should read for long.
    fn publish(&self, control: &Control) {
        let mut experiments: Vec<Arc<Running>> =
            control.running.values().map(|s| s.run.clone()).collect();
        experiments.sort_by_key(|r| r.id);
        let plan = Plan {
            guarded: experiments.iter().any(|r| r.guard.is_some()),
            unavailable: experiments.iter().any(|r| {
                r.experiment
                    .faults
                    .iter()
                    .any(|f| matches!(f.fault, Fault::Unavailable(_)))
            }),
            headers: control.headers.clone(),
            experiments,
        };
        let count = plan.experiments.len();
        let armed = count > 0 || plan.headers.is_some();
        if armed {
            self.plan.store(Arc::new(plan));
            self.armed.store(true, Ordering::Release);
        } else {
            self.armed.store(false, Ordering::Release);
            self.plan.store(Arc::new(plan));
        }
        self.metrics.experiments.set(count as f64);
    }

    /// Starts `exp`; `ttl` shortens its life (an etcd lease's remaining
    /// time).
    pub(crate) fn start(
        self: &Arc<Self>,
        exp: Experiment,
        by: Origin,
        ttl: Option<Duration>,
        revision: i64,
    ) -> Result<ExperimentStatus, StartError> {
        exp.validate()?;
        if exp.duration > self.max_duration {
            return Err(InvalidExperiment::new(
                "duration",
                format!(
                    "must not exceed the controller's max_experiment_duration of {}",
                    humantime::format_duration(self.max_duration)
                ),
            )
            .into());
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let mut control = self.control.lock();
        if control.running.contains_key(&exp.name) {
            return Err(StartError::AlreadyRunning(exp.name));
        }
        if control.running.len() >= self.max_experiments {
            return Err(StartError::TooManyExperiments(self.max_experiments));
        }
        let id = control.next_id;
        control.next_id += 1;
        let now = Instant::now();
        let life = ttl.map_or(exp.duration, |t| t.min(exp.duration));
        let counters = exp
            .faults
            .iter()
            .map(|f| {
                metrics::counter!(
                    "watertight_chaos_faults_injected_total",
                    "name" => self.name.to_string(),
                    "experiment" => exp.name.clone(),
                    "fault" => f.fault.type_name()
                )
            })
            .collect();
        let run = Arc::new(Running {
            id,
            origin: by,
            revision,
            started_at: SystemTime::now(),
            deadline: now.checked_add(life).unwrap_or(now + FAR),
            life,
            guard: exp.abort_when.clone().map(|g| Guard::new(g, now)),
            matched: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            end: Arc::new(Notify::new()),
            trip: Notify::new(),
            trip_reason: Mutex::new(None),
            request_faults: exp
                .faults
                .iter()
                .any(|f| !matches!(f.fault, Fault::Unavailable(_))),
            counters,
            experiment: exp,
        });
        let task = runtime
            .spawn(supervise(Arc::downgrade(self), run.clone()))
            .abort_handle();
        control.running.insert(
            run.experiment.name.clone(),
            Slot {
                run: run.clone(),
                task,
            },
        );
        self.publish(&control);
        self.audit.record(Entry {
            action: Action::Start,
            experiment: Some(run.experiment.name.clone()),
            by,
            reason: None,
            spec: Some(run.experiment.clone()),
        });
        drop(control);
        tracing::info!(
            target: TARGET,
            name = %self.name,
            experiment = %run.experiment.name,
            %by,
            duration = %humantime::format_duration(life),
            "chaos experiment started"
        );
        Ok(run.status(now))
    }

    /// Ends `run` if it is still running; returns whether it was.
    pub(crate) fn end(
        &self,
        run: &Arc<Running>,
        action: Action,
        by: Origin,
        reason: Option<String>,
    ) -> bool {
        let mut control = self.control.lock();
        if run.ended.swap(true, Ordering::AcqRel) {
            return false;
        }
        if control
            .running
            .get(run.name())
            .is_some_and(|s| s.run.id == run.id)
        {
            if let Some(slot) = control.running.remove(run.name()) {
                slot.task.abort();
            }
        }
        self.publish(&control);
        tracing::info!(
            target: TARGET,
            name = %self.name,
            experiment = %run.name(),
            %action,
            %by,
            reason = reason.as_deref().unwrap_or(""),
            "chaos experiment ended"
        );
        self.audit.record(Entry {
            action,
            experiment: Some(run.experiment.name.clone()),
            by,
            reason,
            spec: None,
        });
        drop(control);
        run.end.notify_waiters();
        true
    }

    pub(crate) fn running(&self, name: &str) -> Option<Arc<Running>> {
        self.control.lock().running.get(name).map(|s| s.run.clone())
    }

    pub(crate) fn all_running(&self) -> Vec<Arc<Running>> {
        let mut all: Vec<_> = self
            .control
            .lock()
            .running
            .values()
            .map(|s| s.run.clone())
            .collect();
        all.sort_by_key(|r| r.id);
        all
    }

    pub(crate) fn stop(
        &self,
        name: &str,
        by: Origin,
        reason: Option<String>,
    ) -> Result<ExperimentStatus, NotFound> {
        let run = self.running(name).ok_or_else(|| NotFound::new(name))?;
        let status = run.status(Instant::now());
        if self.end(&run, Action::Stop, by, reason) {
            Ok(status)
        } else {
            Err(NotFound::new(name))
        }
    }

    /// Stops everything, header faults included; returns the experiments
    /// stopped.
    pub(crate) fn halt(&self, by: Origin) -> Vec<String> {
        let mut control = self.control.lock();
        let slots = std::mem::take(&mut control.running);
        let headers = control.headers.take().is_some();
        let mut halted: Vec<Arc<Running>> = Vec::with_capacity(slots.len());
        for slot in slots.into_values() {
            slot.task.abort();
            if !slot.run.ended.swap(true, Ordering::AcqRel) {
                halted.push(slot.run);
            }
        }
        halted.sort_by_key(|r| r.id);
        self.publish(&control);
        for run in &halted {
            self.audit.record(Entry {
                action: Action::Halt,
                experiment: Some(run.experiment.name.clone()),
                by,
                reason: None,
                spec: None,
            });
        }
        if halted.is_empty() {
            self.audit.record(Entry {
                action: Action::Halt,
                experiment: None,
                by,
                reason: Some(
                    if headers {
                        "no experiment running; header faults turned off"
                    } else {
                        "no experiment running"
                    }
                    .to_owned(),
                ),
                spec: None,
            });
        }
        drop(control);
        tracing::warn!(target: TARGET, name = %self.name, %by, halted = halted.len(), header_faults_off = headers, "chaos halted");
        for run in &halted {
            run.end.notify_waiters();
        }
        halted.iter().map(|r| r.experiment.name.clone()).collect()
    }

    pub(crate) fn set_headers(&self, headers: Option<HeaderFaults>) {
        let mut control = self.control.lock();
        control.headers = headers;
        self.publish(&control);
        tracing::info!(target: TARGET, name = %self.name, enabled = control.headers.is_some(), "chaos header faults");
    }

    /// Writes a refusal to the audit log (fleet mode).
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn reject(&self, experiment: Option<String>, by: Origin, reason: String) {
        let _control = self.control.lock();
        self.audit.record(Entry {
            action: Action::Reject,
            experiment,
            by,
            reason: Some(reason),
            spec: None,
        });
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        for slot in self.control.get_mut().running.values() {
            slot.task.abort();
        }
    }
}

/// Watches one experiment: ends it at its deadline, or when its guard
/// trips.
async fn supervise(shared: Weak<Shared>, run: Arc<Running>) {
    let expiry = tokio::time::sleep_until(run.deadline);
    tokio::pin!(expiry);
    let tick = run
        .guard
        .as_ref()
        .filter(|g| g.needs_latency())
        .map(Guard::tick);
    let mut next_tick = tick.map(|t| Instant::now() + t.min(FAR));
    let (action, reason) = loop {
        let tick_sleep = async {
            match next_tick {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = &mut expiry => {
                break (
                    Action::Expire,
                    format!(
                        "its time to live of {} elapsed",
                        humantime::format_duration(run.life)
                    ),
                );
            }
            () = run.trip.notified() => {
                if let Some(reason) = run.trip_reason.lock().clone() {
                    break (Action::Abort, reason);
                }
            }
            () = tick_sleep => {
                next_tick = next_tick.zip(tick).map(|(at, t)| at + t.min(FAR));
                if let Some(reason) = run.guard.as_ref().and_then(|g| g.check(Instant::now())) {
                    break (Action::Abort, reason);
                }
            }
        }
    };
    if let Some(shared) = shared.upgrade() {
        shared.end(&run, action, Origin::Controller, Some(reason));
    }
}

/// Records one result with every guarded experiment of the plan.
pub(crate) fn observe(plan: &Plan, class: ResponseClass, elapsed: Option<Duration>) {
    let now = Instant::now();
    for run in &plan.experiments {
        let Some(guard) = &run.guard else { continue };
        if run.has_ended() {
            continue;
        }
        if let Some(reason) = guard.record(now, class, elapsed) {
            run.trip(reason);
        }
    }
}
