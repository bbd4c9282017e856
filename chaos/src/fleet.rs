//! Fleet mode: experiments for every instance of a service, through etcd.
//!
//! An experiment for service `api` is the JSON [document](crate::experiment)
//! stored at `/watertight/chaos/api/<name>`, under an etcd lease whose TTL is
//! the experiment's duration (in whole seconds, rounded up). Nobody keeps
//! the lease alive: etcd deletes the key when the duration is over, whether
//! or not whoever wrote it is still around. [`FleetClient`] writes, lists
//! and removes such experiments (the `watertight-chaos --etcd` tool uses
//! it).
//!
//! Each instance runs a [`FleetWatch`] ([`FleetBuilder::watch`]) that applies the
//! experiments under its service's prefix to its [`ChaosController`]: each
//! starts with what is left of its lease as its time to live, targets
//! requests as any experiment does, and stops when its key goes (lease
//! expiry or removal), at its own time to live, or when its guard trips.
//! A document that is not a valid experiment, that names another
//! experiment than its key, that has no lease, or that the controller
//! refuses (too long, a name clash with a local experiment) is refused
//! with an audit record ([`Action::Reject`]).
//!
//! The watch is `watertight-discovery`'s [`PrefixWatch`], the protocol of
//! its etcd source (and of Kubernetes' reflectors): a range read of the
//! prefix and its revision, then a watch from the next revision. When the
//! connection fails it keeps the running experiments (each still ends at
//! its time to live), waits a `reconnect_backoff` delay (equal jitter from
//! 100 ms to 10 s), and resumes the watch after the last revision seen, so
//! changes made meanwhile arrive in order; if etcd compacted that revision
//! away it reads the prefix again and reconciles. Each revision of a key is
//! applied once: an experiment halted locally is not restarted by a
//! reconnection, only by a new write.
//!
//! Building with feature `etcd` needs `protoc` (Debian package
//! `protobuf-compiler`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, PutOptions, Txn, TxnOp,
};
use tokio::task::JoinHandle;
use watertight_core::Backoff;
use watertight_discovery::etcd::{self as discovery, PrefixEvent, PrefixWatch};

use crate::audit::{Action, Origin};
use crate::controller::ChaosController;
use crate::error::InvalidExperiment;
use crate::experiment::Experiment;

pub use watertight_discovery::etcd::etcd_client;

const TARGET: &str = "watertight_chaos";

/// The root of every service's prefix.
pub const ROOT: &str = "/watertight/chaos/";

/// The key prefix of `service`'s experiments: `/watertight/chaos/<service>/`.
pub fn prefix(service: &str) -> String {
    format!("{ROOT}{service}/")
}

/// Why a fleet operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum FleetError {
    /// The service name is empty or has characters other than
    /// `A-Z a-z 0-9 . _ -`.
    InvalidService(String),
    /// No etcd endpoints were given.
    NoEndpoints,
    /// The experiment breaks a rule.
    Invalid(InvalidExperiment),
    /// An experiment of that name is already stored.
    AlreadyRunning(String),
    /// The watch must be started from within a tokio runtime.
    NoRuntime,
    /// etcd failed or could not be reached.
    Etcd(etcd_client::Error),
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FleetError::InvalidService(s) => write!(
                f,
                "invalid service name {s:?}: use 1 to 63 characters out of `A-Z a-z 0-9 . _ -`"
            ),
            FleetError::NoEndpoints => f.write_str("no etcd endpoints given"),
            FleetError::Invalid(e) => fmt::Display::fmt(e, f),
            FleetError::AlreadyRunning(name) => {
                write!(f, "an experiment named `{name}` is already stored in etcd")
            }
            FleetError::NoRuntime => {
                f.write_str("the fleet watch must start within a tokio runtime")
            }
            FleetError::Etcd(e) => write!(f, "etcd: {e}"),
        }
    }
}

impl std::error::Error for FleetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FleetError::Invalid(e) => Some(e),
            FleetError::Etcd(e) => Some(e),
            _ => None,
        }
    }
}

impl From<etcd_client::Error> for FleetError {
    fn from(e: etcd_client::Error) -> Self {
        FleetError::Etcd(e)
    }
}

fn check_service(service: &str) -> Result<(), FleetError> {
    let ok = !service.is_empty()
        && service.len() <= 63
        && service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(FleetError::InvalidService(service.to_owned()))
    }
}

/// Whole seconds, rounded up: an experiment never ends early.
fn lease_secs(d: Duration) -> i64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

/// Entry point of fleet mode; see the [module docs](self).
#[derive(Debug)]
pub struct Fleet(());

impl Fleet {
    /// A builder for the watch of `service`'s experiments on the etcd
    /// cluster at `endpoints` (`http://host:2379`).
    pub fn builder<E: Into<String>>(
        endpoints: impl IntoIterator<Item = E>,
        service: impl Into<String>,
    ) -> FleetBuilder {
        FleetBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            service: service.into(),
            options: discovery::default_connect_options(),
            reconnect: discovery::default_reconnect_backoff(),
            seed: None,
        }
    }
}

/// Builds a [`FleetWatch`].
#[derive(Clone)]
pub struct FleetBuilder {
    endpoints: Vec<String>,
    service: String,
    options: ConnectOptions,
    reconnect: Backoff,
    seed: Option<u64>,
}

impl fmt::Debug for FleetBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetBuilder")
            .field("endpoints", &self.endpoints)
            .field("service", &self.service)
            .field("reconnect", &self.reconnect)
            .finish()
    }
}

impl FleetBuilder {
    /// Connection options (TLS, credentials, timeouts); default
    /// [`default_connect_options`](discovery::default_connect_options)
    /// (connect timeout 5 s, HTTP/2 keep-alive every 10 s with a 5 s
    /// timeout, TCP keep-alive 30 s).
    pub fn connect_options(mut self, options: ConnectOptions) -> Self {
        self.options = options;
        self
    }

    /// The delays between reconnection attempts; default equal jitter from
    /// 100 ms to 10 s, reset once a watch is established.
    pub fn reconnect_backoff(mut self, backoff: Backoff) -> Self {
        self.reconnect = backoff;
        self
    }

    /// Seeds the backoff jitter.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Starts watching in a task on the current runtime, applying what it
    /// finds to `controller`.
    ///
    /// # Errors
    ///
    /// [`FleetError::InvalidService`], [`FleetError::NoEndpoints`], or
    /// [`FleetError::NoRuntime`] outside a tokio runtime. Connection
    /// failures are not errors: the watch retries.
    pub fn watch(self, controller: &ChaosController) -> Result<FleetWatch, FleetError> {
        check_service(&self.service)?;
        if self.endpoints.is_empty() {
            return Err(FleetError::NoEndpoints);
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| FleetError::NoRuntime)?;
        let retries = match self.seed {
            Some(seed) => self.reconnect.sequence_seeded(seed),
            None => self.reconnect.sequence(),
        };
        let state = Arc::new(WatchState {
            connected: AtomicBool::new(false),
            revision: AtomicI64::new(0),
        });
        let prefix = prefix(&self.service);
        let watcher = Watcher {
            controller: controller.clone(),
            watch: PrefixWatch::new(self.endpoints, prefix.clone(), self.options, retries),
            applied: BTreeMap::new(),
            state: state.clone(),
        };
        let task = runtime.spawn(watcher.run());
        Ok(FleetWatch {
            prefix,
            state,
            task,
        })
    }
}

#[derive(Debug)]
struct WatchState {
    connected: AtomicBool,
    revision: AtomicI64,
}

/// The running watch of one service's fleet experiments. Dropping it stops
/// the watch; experiments it started run on to their time to live.
#[derive(Debug)]
pub struct FleetWatch {
    prefix: String,
    state: Arc<WatchState>,
    task: JoinHandle<()>,
}

impl FleetWatch {
    /// The key prefix watched.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the watch is established now.
    pub fn is_connected(&self) -> bool {
        self.state.connected.load(Ordering::Acquire)
    }

    /// The last etcd revision applied.
    pub fn revision(&self) -> i64 {
        self.state.revision.load(Ordering::Acquire)
    }
}

impl Drop for FleetWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Watcher {
    controller: ChaosController,
    watch: PrefixWatch,
    /// The revision of each key's document this watch applied (started,
    /// or refused): each is applied once.
    applied: BTreeMap<String, i64>,
    state: Arc<WatchState>,
}

impl Watcher {
    async fn run(mut self) {
        loop {
            let event = self.watch.next().await;
            match self.on_event(event).await {
                Ok(()) => {
                    let revision = self.watch.revision();
                    self.state.revision.store(revision, Ordering::Release);
                }
                // A lease lookup failed, so a document is not applied:
                // reconnect and read everything again.
                Err(e) => self.watch.resync(e),
            }
        }
    }

    fn prefix(&self) -> &str {
        self.watch.prefix()
    }

    fn name_of(&self, key: &[u8]) -> Option<String> {
        let key = std::str::from_utf8(key).ok()?;
        key.strip_prefix(self.prefix()).map(str::to_owned)
    }

    async fn on_event(&mut self, event: PrefixEvent) -> Result<(), etcd_client::Error> {
        match event {
            PrefixEvent::Snapshot { revision, kvs } => {
                let present: Vec<(String, KeyValue)> = kvs
                    .into_iter()
                    .filter_map(|kv| Some((self.name_of(kv.key())?, kv)))
                    .collect();
                let gone: Vec<String> = self
                    .applied
                    .keys()
                    .filter(|k| !present.iter().any(|(n, _)| n == *k))
                    .cloned()
                    .collect();
                for name in gone {
                    self.removed(&name);
                }
                for (name, kv) in present {
                    self.put(name, &kv).await?;
                }
                tracing::info!(target: TARGET, prefix = %self.prefix(), revision, "chaos fleet prefix read");
            }
            PrefixEvent::Watching { revision } => {
                self.state.connected.store(true, Ordering::Release);
                tracing::info!(target: TARGET, prefix = %self.prefix(), revision, "chaos fleet watch established");
            }
            PrefixEvent::Put(kv) => {
                if let Some(name) = self.name_of(kv.key()) {
                    self.put(name, &kv).await?;
                }
            }
            PrefixEvent::Delete(kv) => {
                if let Some(name) = self.name_of(kv.key()) {
                    self.removed(&name);
                }
            }
            PrefixEvent::Compacted {
                revision,
                compacted,
            } => {
                tracing::warn!(target: TARGET, prefix = %self.prefix(), revision, compacted, "etcd compacted past the chaos fleet watch; reading the prefix again");
            }
            PrefixEvent::Disconnected { error, retry_in } => {
                self.state.connected.store(false, Ordering::Release);
                tracing::warn!(target: TARGET, prefix = %self.prefix(), %error, ?retry_in, "chaos fleet watch lost etcd; experiments keep their time to live");
            }
            _ => {}
        }
        Ok(())
    }

    fn reject(&self, name: &str, reason: String) {
        tracing::warn!(target: TARGET, prefix = %self.prefix(), experiment = %name, %reason, "refused a chaos fleet experiment");
        self.controller
            .shared
            .reject(Some(name.to_owned()), Origin::Etcd, reason);
    }

    /// Applies the document `kv` of key `name`, once per revision.
    async fn put(&mut self, name: String, kv: &KeyValue) -> Result<(), etcd_client::Error> {
        let rev = kv.mod_revision();
        if self.applied.get(&name) == Some(&rev) {
            return Ok(());
        }
        let ttl = match (kv.lease(), self.watch.client()) {
            (0, _) => None,
            (lease, Some(client)) => {
                let ttl = client.lease_time_to_live(lease, None).await?.ttl();
                if ttl <= 0 {
                    // Expired while we looked: its deletion follows.
                    return Ok(());
                }
                Some(ttl)
            }
            // Disconnected: the snapshot after reconnection brings it.
            (_, None) => return Ok(()),
        };
        self.apply(name, kv.value(), ttl, rev);
        Ok(())
    }

    fn apply(&mut self, name: String, value: &[u8], ttl: Option<i64>, rev: i64) {
        self.applied.insert(name.clone(), rev);
        let exp = match Experiment::from_json(value) {
            Ok(e) => e,
            Err(e) => {
                self.reject(&name, e.to_string());
                return;
            }
        };
        if exp.name != name {
            self.reject(
                &name,
                format!(
                    "the key names `{name}` but the document names `{}`",
                    exp.name
                ),
            );
            return;
        }
        let Some(ttl) = ttl else {
            self.reject(
                &name,
                "written without a lease: fleet experiments need one so they expire".to_owned(),
            );
            return;
        };
        let shared = &self.controller.shared;
        if let Some(running) = shared.running(&name) {
            if running.origin == Origin::Etcd {
                shared.end(
                    &running,
                    Action::Stop,
                    Origin::Etcd,
                    Some("replaced in etcd".to_owned()),
                );
            } else {
                self.reject(
                    &name,
                    format!("a {} experiment of that name is running", running.origin),
                );
                return;
            }
        }
        let left = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
        if let Err(e) = shared.start(exp, Origin::Etcd, Some(left), rev) {
            self.reject(&name, e.to_string());
        }
    }

    /// Key `name` is gone: stop what this watch started from it.
    fn removed(&mut self, name: &str) {
        let Some(rev) = self.applied.remove(name) else {
            return;
        };
        let shared = &self.controller.shared;
        if let Some(running) = shared.running(name) {
            if running.origin == Origin::Etcd && running.revision == rev {
                shared.end(
                    &running,
                    Action::Stop,
                    Origin::Etcd,
                    Some("removed from etcd (its lease expired or it was deleted)".to_owned()),
                );
            }
        }
    }
}

/// An experiment stored in etcd.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct FleetEntry {
    /// The experiment.
    pub experiment: Experiment,
    /// The time its lease has left (whole seconds).
    #[serde(with = "humantime_serde")]
    pub remaining: Duration,
    /// Its lease.
    pub lease: i64,
    /// The revision it was written at.
    pub revision: i64,
}

/// Writes, lists and removes a service's fleet experiments.
///
/// ```no_run
/// use std::time::Duration;
/// use watertight_chaos::fleet::FleetClient;
/// use watertight_chaos::{Experiment, Fault, Latency, Target};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut fleet = FleetClient::connect(["http://127.0.0.1:2379"], "api").await?;
/// fleet
///     .start(
///         &Experiment::builder("slow-c")
///             .duration(Duration::from_secs(300))
///             .target(Target::all().zone("c"))
///             .fault(Fault::Latency(Latency::fixed(Duration::from_millis(200))), 5.0)
///             .build()?,
///     )
///     .await?;
/// # Ok(()) }
/// ```
pub struct FleetClient {
    client: Client,
    prefix: String,
    max_duration: Duration,
}

impl fmt::Debug for FleetClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetClient")
            .field("prefix", &self.prefix)
            .field("max_duration", &self.max_duration)
            .finish()
    }
}

impl FleetClient {
    /// Connects to the etcd cluster at `endpoints` for `service`'s
    /// experiments, with the default connection options.
    ///
    /// # Errors
    ///
    /// [`FleetError::InvalidService`], [`FleetError::NoEndpoints`], or
    /// [`FleetError::Etcd`] when etcd cannot be reached.
    pub async fn connect<E: Into<String>>(
        endpoints: impl IntoIterator<Item = E>,
        service: &str,
    ) -> Result<FleetClient, FleetError> {
        Self::connect_with(endpoints, service, discovery::default_connect_options()).await
    }

    /// As [`connect`](Self::connect), with connection options.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_with<E: Into<String>>(
        endpoints: impl IntoIterator<Item = E>,
        service: &str,
        options: ConnectOptions,
    ) -> Result<FleetClient, FleetError> {
        check_service(service)?;
        let endpoints: Vec<String> = endpoints.into_iter().map(Into::into).collect();
        if endpoints.is_empty() {
            return Err(FleetError::NoEndpoints);
        }
        let client = Client::connect(&endpoints, Some(options)).await?;
        Ok(FleetClient {
            client,
            prefix: prefix(service),
            max_duration: Duration::from_secs(3600),
        })
    }

    /// The longest duration [`start`](Self::start) writes (default 1 h,
    /// the controllers' default cap).
    pub fn max_duration(mut self, max: Duration) -> Self {
        self.max_duration = max;
        self
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Stores `experiment` under a lease of its duration, unless one of
    /// that name is stored already.
    ///
    /// # Errors
    ///
    /// [`FleetError::Invalid`] (the rules of [`Experiment::validate`], a
    /// duration over [`max_duration`](Self::max_duration)),
    /// [`FleetError::AlreadyRunning`], [`FleetError::Etcd`].
    pub async fn start(&mut self, experiment: &Experiment) -> Result<FleetEntry, FleetError> {
        experiment.validate().map_err(FleetError::Invalid)?;
        if experiment.duration > self.max_duration {
            return Err(FleetError::Invalid(InvalidExperiment::new(
                "duration",
                format!(
                    "must not exceed {}",
                    humantime::format_duration(self.max_duration)
                ),
            )));
        }
        let key = self.key(&experiment.name);
        let grant = self
            .client
            .lease_grant(lease_secs(experiment.duration), None)
            .await?;
        let put = TxnOp::put(
            key.as_str(),
            experiment.to_json(),
            Some(PutOptions::new().with_lease(grant.id())),
        );
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([put]);
        let resp = self.client.txn(txn).await?;
        if !resp.succeeded() {
            let _ = self.client.lease_revoke(grant.id()).await;
            return Err(FleetError::AlreadyRunning(experiment.name.clone()));
        }
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok(FleetEntry {
            experiment: experiment.clone(),
            remaining: Duration::from_secs(u64::try_from(grant.ttl()).unwrap_or(0)),
            lease: grant.id(),
            revision,
        })
    }

    /// The stored experiments, with the time their leases have left.
    /// Documents that are not valid experiments are skipped.
    ///
    /// # Errors
    ///
    /// [`FleetError::Etcd`].
    pub async fn list(&mut self) -> Result<Vec<FleetEntry>, FleetError> {
        let resp = self
            .client
            .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        let mut entries = Vec::new();
        for kv in resp.kvs() {
            let Ok(experiment) = Experiment::from_json(kv.value()) else {
                continue;
            };
            let ttl = if kv.lease() == 0 {
                0
            } else {
                self.client
                    .lease_time_to_live(kv.lease(), None)
                    .await?
                    .ttl()
            };
            entries.push(FleetEntry {
                experiment,
                remaining: Duration::from_secs(u64::try_from(ttl).unwrap_or(0)),
                lease: kv.lease(),
                revision: kv.mod_revision(),
            });
        }
        Ok(entries)
    }

    /// The stored experiment `name`.
    ///
    /// # Errors
    ///
    /// [`FleetError::Etcd`].
    pub async fn get(&mut self, name: &str) -> Result<Option<FleetEntry>, FleetError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .find(|e| e.experiment.name == name))
    }

    /// Removes experiment `name` (revoking its lease); returns whether it
    /// was stored.
    ///
    /// # Errors
    ///
    /// [`FleetError::Etcd`].
    pub async fn stop(&mut self, name: &str) -> Result<bool, FleetError> {
        let key = self.key(name);
        let resp = self.client.get(key.as_str(), None).await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(false);
        };
        let lease = kv.lease();
        let deleted = self.client.delete(key.as_str(), None).await?.deleted() > 0;
        if lease != 0 {
            let _ = self.client.lease_revoke(lease).await;
        }
        Ok(deleted)
    }

    /// Removes every experiment of the service; returns their names.
    ///
    /// # Errors
    ///
    /// [`FleetError::Etcd`].
    pub async fn halt(&mut self) -> Result<Vec<String>, FleetError> {
        let resp = self
            .client
            .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        let stored: Vec<(String, i64)> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = std::str::from_utf8(kv.key()).ok()?;
                Some((
                    key.strip_prefix(self.prefix.as_str())?.to_owned(),
                    kv.lease(),
                ))
            })
            .collect();
        self.client
            .delete(
                self.prefix.as_str(),
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )
            .await?;
        for (_, lease) in &stored {
            if *lease != 0 {
                let _ = self.client.lease_revoke(*lease).await;
            }
        }
        Ok(stored.into_iter().map(|(n, _)| n).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_round_up_to_whole_seconds() {
        assert_eq!(lease_secs(Duration::from_secs(10)), 10);
        assert_eq!(lease_secs(Duration::from_millis(10_001)), 11);
        assert_eq!(lease_secs(Duration::from_millis(1)), 1);
    }

    #[test]
    fn service_names_are_checked() {
        assert!(check_service("api").is_ok());
        assert!(check_service("").is_err());
        assert!(check_service("a/b").is_err());
        assert_eq!(prefix("api"), "/watertight/chaos/api/");
    }
}
