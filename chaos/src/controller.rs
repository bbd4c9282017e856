//! [`ChaosController`]: starts, watches and stops experiments for every
//! layer built from it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use watertight_core::{config, Endpoint};

use crate::audit::{Audit, AuditRecord, AuditSink, Listener, Origin};
use crate::error::{ConfigError, NotFound, StartError};
use crate::experiment::Experiment;
use crate::headers::HeaderFaults;
use crate::layer::ChaosLayer;
use crate::state::{Shared, SharedConfig};

/// The component [`ConfigError`]s of the controller name.
const COMPONENT: &str = "chaos";

/// The handle of the chaos layers built from it: starts, lists and stops
/// experiments, halts everything, and keeps the audit log.
///
/// Every experiment ends by itself: at the end of its `duration` (capped
/// by `max_experiment_duration`), or earlier when its
/// [`AbortWhen`](crate::AbortWhen) guard sees the steady state break. Each
/// transition is an [`AuditRecord`].
///
/// ```
/// use std::time::Duration;
/// use watertight_chaos::{ChaosController, Experiment, Fault};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let chaos = ChaosController::builder().name("payments").build()?;
/// let layer = chaos.layer(); // wrap a client or a server with it
/// chaos.start(
///     Experiment::builder("hang-1pct")
///         .duration(Duration::from_secs(300))
///         .fault(Fault::Hang, 1.0)
///         .build()?,
/// )?;
/// assert_eq!(chaos.experiments().len(), 1);
/// chaos.halt_all();
/// assert!(chaos.experiments().is_empty());
/// # drop(layer); Ok(()) }
/// ```
///
/// # Clone
///
/// Cheap: clones share the controller (an `Arc`), as do its layers and the
/// services they wrap.
#[derive(Clone)]
pub struct ChaosController {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for ChaosController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosController")
            .field("name", &self.name())
            .field("experiments", &self.shared.all_running().len())
            .field("active_faults", &self.active_faults())
            .finish()
    }
}

impl Default for ChaosController {
    fn default() -> Self {
        ChaosController::new()
    }
}

/// One running experiment, as the controller sees it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ExperimentStatus {
    /// The experiment.
    pub experiment: Experiment,
    /// Who started it.
    pub origin: Origin,
    /// When it started, in wall-clock time.
    #[serde(with = "humantime_serde")]
    pub started_at: SystemTime,
    /// The time it has left.
    #[serde(with = "humantime_serde")]
    pub remaining: Duration,
    /// Requests its target matched so far.
    pub matched: u64,
    /// Faults it injected so far.
    pub injected: u64,
}

impl ChaosController {
    /// A controller with the defaults of [`ControllerBuilder`].
    pub fn new() -> Self {
        ChaosController::builder()
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder.
    pub fn builder() -> ControllerBuilder {
        ControllerBuilder::default()
    }

    /// The controller's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// A layer whose services inject this controller's faults, judging
    /// results with [`ErrorsAsFailures`](watertight_core::ErrorsAsFailures).
    pub fn layer(&self) -> ChaosLayer {
        ChaosLayer::new(self.clone())
    }

    /// A layer for `http` services; see [`HttpChaos`](crate::HttpChaos).
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn http_layer(&self) -> crate::layer::HttpChaosLayer {
        crate::layer::HttpChaosLayer::new(self.clone())
    }

    /// Starts an experiment.
    ///
    /// # Errors
    ///
    /// - [`StartError::Invalid`]: the experiment breaks a rule of
    ///   [`Experiment::validate`], or its `duration` exceeds
    ///   `max_experiment_duration`;
    /// - [`StartError::AlreadyRunning`]: an experiment of that name runs;
    /// - [`StartError::TooManyExperiments`]: `max_experiments` run;
    /// - [`StartError::NoRuntime`]: called outside a tokio runtime.
    pub fn start(&self, experiment: Experiment) -> Result<ExperimentStatus, StartError> {
        self.shared.start(experiment, Origin::Local, None, 0)
    }

    #[cfg_attr(not(feature = "admin"), allow(dead_code))]
    pub(crate) fn start_as(
        &self,
        experiment: Experiment,
        by: Origin,
    ) -> Result<ExperimentStatus, StartError> {
        self.shared.start(experiment, by, None, 0)
    }

    /// Stops the experiment `name` before its time.
    ///
    /// # Errors
    ///
    /// [`NotFound`] if no experiment of that name runs.
    pub fn stop(&self, name: &str) -> Result<ExperimentStatus, NotFound> {
        self.shared.stop(name, Origin::Local, None)
    }

    #[cfg_attr(not(feature = "admin"), allow(dead_code))]
    pub(crate) fn stop_as(&self, name: &str, by: Origin) -> Result<ExperimentStatus, NotFound> {
        self.shared.stop(name, by, None)
    }

    /// Stops every experiment at once and turns header-triggered faults
    /// off. Hung requests and unavailable services resume. Returns the
    /// names of the experiments stopped.
    pub fn halt_all(&self) -> Vec<String> {
        self.shared.halt(Origin::Local)
    }

    #[cfg_attr(not(feature = "admin"), allow(dead_code))]
    pub(crate) fn halt_as(&self, by: Origin) -> Vec<String> {
        self.shared.halt(by)
    }

    /// The running experiments, oldest first.
    pub fn experiments(&self) -> Vec<ExperimentStatus> {
        let now = Instant::now();
        self.shared
            .all_running()
            .iter()
            .map(|r| r.status(now))
            .collect()
    }

    /// The running experiment `name`.
    pub fn experiment(&self, name: &str) -> Option<ExperimentStatus> {
        self.shared.running(name).map(|r| r.status(Instant::now()))
    }

    /// The audit records kept in memory, oldest first.
    pub fn audit(&self) -> Vec<AuditRecord> {
        self.shared.audit.records()
    }

    /// Turns header-triggered faults on; see [`headers`](crate::headers).
    pub fn enable_header_faults(&self, settings: HeaderFaults) {
        self.shared.set_headers(Some(settings));
    }

    /// Turns header-triggered faults off.
    pub fn disable_header_faults(&self) {
        self.shared.set_headers(None);
    }

    /// Faults active now (requests delayed, hung or streaming a faulted
    /// body, services unavailable).
    pub fn active_faults(&self) -> usize {
        self.shared.active()
    }

    /// The longest duration an experiment may have.
    pub fn max_experiment_duration(&self) -> Duration {
        self.shared.max_duration
    }
}

/// Builds a [`ChaosController`].
///
/// | setting | default |
/// |---|---|
/// | `name` | `"chaos"` |
/// | `max_experiment_duration` | 1 h |
/// | `max_experiments` | 16 |
/// | `max_active_faults` | unlimited, as Envoy's `max_active_faults` |
/// | `audit_sink` | `tracing` when none is given |
/// | `audit_capacity` | 1,024 records in memory |
/// | `header_faults` | off |
/// | `seed` | entropy |
/// | `instance` | none |
pub struct ControllerBuilder {
    name: String,
    max_duration: Duration,
    max_experiments: usize,
    max_active: Option<usize>,
    sinks: Vec<AuditSink>,
    audit_capacity: usize,
    headers: Option<HeaderFaults>,
    seed: Option<u64>,
    instance: Option<Arc<Endpoint>>,
    listener: Option<Listener>,
}

impl Default for ControllerBuilder {
    fn default() -> Self {
        ControllerBuilder {
            name: "chaos".to_owned(),
            max_duration: Duration::from_secs(3600),
            max_experiments: 16,
            max_active: None,
            sinks: Vec::new(),
            audit_capacity: 1024,
            headers: None,
            seed: None,
            instance: None,
            listener: None,
        }
    }
}

impl fmt::Debug for ControllerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControllerBuilder")
            .field("name", &self.name)
            .field("max_experiment_duration", &self.max_duration)
            .field("max_experiments", &self.max_experiments)
            .field("max_active_faults", &self.max_active)
            .field("audit_sinks", &self.sinks)
            .field("audit_capacity", &self.audit_capacity)
            .field("header_faults", &self.headers)
            .field("seed", &self.seed)
            .field("instance", &self.instance)
            .finish()
    }
}

impl ControllerBuilder {
    /// The instance name: the `name` label of the metrics, the `controller`
    /// of audit records. Not empty.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The longest `duration` an experiment may have (default 1 h, more
    /// than zero).
    pub fn max_experiment_duration(mut self, max: Duration) -> Self {
        self.max_duration = max;
        self
    }

    /// How many experiments may run at once (default 16, at least 1).
    pub fn max_experiments(mut self, max: usize) -> Self {
        self.max_experiments = max;
        self
    }

    /// How many faults may be active at once across every layer of this
    /// controller (at least 1; default unlimited). A fault that would
    /// exceed it is not injected, and counted in
    /// `watertight_chaos_faults_skipped_total`.
    pub fn max_active_faults(mut self, max: usize) -> Self {
        self.max_active = Some(max);
        self
    }

    /// Adds a sink for audit records (call again for more). Without any,
    /// records go to [`AuditSink::tracing`].
    pub fn audit_sink(mut self, sink: AuditSink) -> Self {
        self.sinks.push(sink);
        self
    }

    /// How many audit records to keep in memory (default 1,024; 0 keeps
    /// none).
    pub fn audit_capacity(mut self, records: usize) -> Self {
        self.audit_capacity = records;
        self
    }

    /// Turns header-triggered faults on from the start; see
    /// [`headers`](crate::headers).
    pub fn header_faults(mut self, settings: HeaderFaults) -> Self {
        self.headers = Some(settings);
        self
    }

    /// Seeds every random draw (percentages, latencies), for reproducible
    /// runs: services draw from streams numbered in the order they are
    /// built.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The endpoint this instance runs as: endpoint matchers of a target
    /// use it for requests that carry no
    /// [`Selected`](watertight_core::Selected) extension, and
    /// `unavailable` faults always do.
    pub fn instance(mut self, endpoint: Endpoint) -> Self {
        self.instance = Some(Arc::new(endpoint));
        self
    }

    /// Calls `listener` with every audit record, after it is written. It
    /// runs under the controller's lock: it must not call the controller.
    pub fn on_event<F>(mut self, listener: F) -> Self
    where
        F: Fn(&AuditRecord) + Send + Sync + 'static,
    {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: an empty `name`, a zero
    /// `max_experiment_duration`, `max_experiments` or `max_active_faults`,
    /// or a zero `header_faults.max_delay`.
    pub fn build(self) -> Result<ChaosController, ConfigError> {
        config::name(COMPONENT, &self.name)?;
        config::non_zero(COMPONENT, "max_experiment_duration", self.max_duration)?;
        if self.max_experiments == 0 {
            return Err(ConfigError::new(
                COMPONENT,
                "max_experiments",
                "must be at least 1",
            ));
        }
        if self.max_active == Some(0) {
            return Err(ConfigError::new(
                COMPONENT,
                "max_active_faults",
                "must be at least 1",
            ));
        }
        if let Some(h) = &self.headers {
            config::non_zero(COMPONENT, "header_faults.max_delay", h.max_delay)?;
        }
        let name: Arc<str> = self.name.into();
        let sinks = if self.sinks.is_empty() {
            vec![AuditSink::tracing()]
        } else {
            self.sinks
        };
        let audit = Audit::new(name.clone(), self.audit_capacity, sinks, self.listener);
        Ok(ChaosController {
            shared: Shared::new(SharedConfig {
                name,
                instance: self.instance,
                max_active: self.max_active,
                seed: self.seed,
                max_duration: self.max_duration,
                max_experiments: self.max_experiments,
                headers: self.headers,
                audit,
            }),
        })
    }
}
