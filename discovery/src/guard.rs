//! Guards that keep a discovery stream sane when its backend is not.
//!
//! [`Guard`] wraps any source stream (`Stream<Item = Result<Change, Error>>`)
//! into a [`Guarded`] stream of the same kind, which:
//!
//! - **keeps the last known good set** on backend errors: errors pass through
//!   (counted, traced) but never remove an endpoint, so a registry that is
//!   unreachable never empties the set;
//! - **self-preservation** (Eureka's): a batch of changes that would remove
//!   more than `max_removal_ratio` (default 50%) of the endpoints served
//!   before it is *held*: its additions and updates apply at once, and each
//!   held endpoint is removed only once it has been missing from the source
//!   for `confirm_after` (default 30 s) without a break. If the source
//!   reverts in the meantime (the endpoints come back, or enough of them that
//!   what is still missing falls within the ratio), what is still missing is
//!   removed at once and the hold ends. Eureka stops expiring instances when
//!   renewals fall under 85% of the expected rate, because a mass
//!   disappearance is far more often a network or registry failure than a
//!   mass death of instances;
//! - **debouncing**: changes are collected for `debounce` (default 100 ms)
//!   after the first one and applied as one batch, so a burst of registry
//!   events (a deployment, a range delete) is judged as one update.
//!
//! The output is a stream of [`Change::Insert`] and [`Change::Remove`] (never
//! `Reset`): the changes that take the served set from one batch to the next.
//! Insertions come before removals in a batch, so the set never dips.
//!
//! Staleness is the time since the source last yielded a change while its
//! latest item is an error: it is zero while the source is healthy. Sources
//! yield a change (at least a `Reset` of the same set) when they recover from
//! an error, which clears it.
//!
//! # Metrics
//!
//! All with label `name` (default `discovery`):
//!
//! | name | kind | what |
//! |---|---|---|
//! | `watertight_discovery_endpoints` | gauge | endpoints served |
//! | `watertight_discovery_updates_applied_total` | counter | batches that changed the served set |
//! | `watertight_discovery_updates_held_total` | counter | updates held by self-preservation |
//! | `watertight_discovery_backend_errors_total` | counter | error items from the source |
//! | `watertight_discovery_staleness_seconds` | gauge | how long the set has gone unconfirmed |

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use parking_lot::Mutex;
use pin_project::pin_project;
use tokio::time::{Instant, Sleep};
use watertight_core::{Change, Endpoint, EndpointId};

use crate::error::{ConfigError, COMPONENT};
use crate::set::{self, Set};
use crate::Error;

const TARGET: &str = "watertight_discovery";

/// What a [`Guarded`] stream did, for an [`on_event`](GuardBuilder::on_event)
/// listener.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A batch changed the served set.
    Applied {
        /// Endpoints inserted or replaced.
        inserted: usize,
        /// Endpoints removed.
        removed: usize,
        /// Endpoints served now.
        endpoints: usize,
    },
    /// Self-preservation held the removals of a batch.
    Held {
        /// Removals held.
        removals: usize,
        /// Endpoints served (including the held ones).
        endpoints: usize,
        /// When the removals apply if they persist.
        confirm_at: Instant,
    },
    /// Held removals persisted for `confirm_after` and were applied.
    Confirmed {
        /// Endpoints removed.
        removed: usize,
        /// Endpoints served now.
        endpoints: usize,
    },
    /// The source reverted enough of a held removal that what is left falls
    /// within the ratio; what is left was applied and the hold ended.
    Released {
        /// Held removals that were applied anyway (still missing).
        removed: usize,
        /// Endpoints served now.
        endpoints: usize,
    },
    /// The source yielded an error; the set is kept.
    BackendError {
        /// The error's message.
        message: String,
    },
    /// The source yielded a change after errors.
    Recovered {
        /// How long the set had gone unconfirmed.
        stale_for: Duration,
    },
}

type Listener = Arc<dyn Fn(&Event) + Send + Sync + 'static>;

/// The guard configuration: see the [module docs](self). Build with
/// [`Guard::builder`]; wrap a source with [`Guard::wrap`] or
/// [`SourceExt::guarded`](crate::SourceExt::guarded).
///
/// # Clone
///
/// Clones share only the event listener; every wrapped stream has its own
/// state and [`GuardHandle`].
#[derive(Clone)]
pub struct Guard {
    max_removal_ratio: f64,
    confirm_after: Duration,
    debounce: Duration,
    name: String,
    listener: Option<Listener>,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("max_removal_ratio", &self.max_removal_ratio)
            .field("confirm_after", &self.confirm_after)
            .field("debounce", &self.debounce)
            .field("name", &self.name)
            .field("listener", &self.listener.as_ref().map(|_| ".."))
            .finish()
    }
}

impl Default for Guard {
    /// Ratio 0.5, confirm after 30 s, debounce 100 ms, name `discovery`.
    fn default() -> Self {
        Guard {
            max_removal_ratio: 0.5,
            confirm_after: Duration::from_secs(30),
            debounce: Duration::from_millis(100),
            name: "discovery".to_owned(),
            listener: None,
        }
    }
}

impl Guard {
    /// A builder with the defaults.
    pub fn builder() -> GuardBuilder {
        GuardBuilder {
            guard: Guard::default(),
        }
    }

    /// The largest share of the served endpoints one batch may remove without
    /// being held.
    pub fn max_removal_ratio(&self) -> f64 {
        self.max_removal_ratio
    }

    /// How long held removals must persist before they apply.
    pub fn confirm_after(&self) -> Duration {
        self.confirm_after
    }

    /// How long changes are collected into one batch.
    pub fn debounce(&self) -> Duration {
        self.debounce
    }

    /// The instance name used in metrics and traces.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Wraps a source. Gauges are registered (at zero) here, with the
    /// `metrics` recorder current at this point.
    pub fn wrap<St>(&self, source: St) -> Guarded<St>
    where
        St: Stream<Item = Result<Change, Error>>,
    {
        let metrics = Metrics::new(&self.name);
        let shared = Arc::new(Shared {
            endpoints: Mutex::new(Arc::new(Vec::new())),
            held: AtomicUsize::new(0),
            stale_since: Mutex::new(None),
            updates_applied: AtomicU64::new(0),
            updates_held: AtomicU64::new(0),
            backend_errors: AtomicU64::new(0),
        });
        Guarded {
            inner: source,
            inner_done: false,
            state: State {
                config: self.clone(),
                upstream: Set::new(),
                applied: Set::new(),
                batch_deadline: None,
                hold: None,
                missing: BTreeMap::new(),
                last_ok: Instant::now(),
                stale: false,
                metrics,
                shared: shared.clone(),
            },
            batch_timer: None,
            hold_timer: None,
            out: VecDeque::new(),
            handle: GuardHandle { shared },
        }
    }
}

/// Builds a [`Guard`].
#[derive(Debug)]
pub struct GuardBuilder {
    guard: Guard,
}

impl GuardBuilder {
    /// The largest share (0 to 1) of the served endpoints one batch may remove
    /// without being held; default 0.5. 1 turns self-preservation off.
    pub fn max_removal_ratio(mut self, ratio: f64) -> Self {
        self.guard.max_removal_ratio = ratio;
        self
    }

    /// How long held removals must persist before they apply; default 30 s.
    /// Zero applies them at once (self-preservation off).
    pub fn confirm_after(mut self, d: Duration) -> Self {
        self.guard.confirm_after = d;
        self
    }

    /// How long changes are collected into one batch after the first;
    /// default 100 ms. Zero applies every change as soon as the source has
    /// nothing more ready.
    pub fn debounce(mut self, d: Duration) -> Self {
        self.guard.debounce = d;
        self
    }

    /// The instance name for metrics and traces; default `discovery`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.guard.name = name.into();
        self
    }

    /// Calls `f` with every [`Event`].
    pub fn on_event(mut self, f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.guard.listener = Some(Arc::new(f));
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the field when `max_removal_ratio` is not within
    /// 0 to 1, or `name` is empty.
    pub fn build(self) -> Result<Guard, ConfigError> {
        let g = self.guard;
        if !(0.0..=1.0).contains(&g.max_removal_ratio) {
            return Err(ConfigError::new(
                COMPONENT,
                "max_removal_ratio",
                "must be between 0 and 1",
            ));
        }
        watertight_core::config::name(COMPONENT, &g.name)?;
        Ok(g)
    }
}

#[cfg(feature = "serde")]
mod config {
    use super::*;

    /// The serde form of a [`Guard`]: every field optional, durations in
    /// humantime (`"30s"`).
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub(super) struct GuardConfig {
        max_removal_ratio: f64,
        #[serde(with = "humantime_serde")]
        confirm_after: Duration,
        #[serde(with = "humantime_serde")]
        debounce: Duration,
        name: String,
    }

    impl Default for GuardConfig {
        fn default() -> Self {
            let g = Guard::default();
            GuardConfig {
                max_removal_ratio: g.max_removal_ratio,
                confirm_after: g.confirm_after,
                debounce: g.debounce,
                name: g.name,
            }
        }
    }

    impl TryFrom<GuardConfig> for Guard {
        type Error = ConfigError;

        fn try_from(c: GuardConfig) -> Result<Self, ConfigError> {
            Guard::builder()
                .max_removal_ratio(c.max_removal_ratio)
                .confirm_after(c.confirm_after)
                .debounce(c.debounce)
                .name(c.name)
                .build()
        }
    }

    impl<'de> serde::Deserialize<'de> for Guard {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let c = GuardConfig::deserialize(d)?;
            Guard::try_from(c).map_err(serde::de::Error::custom)
        }
    }
}

/// Observes a [`Guarded`] stream.
///
/// # Clone
///
/// Clones observe the same stream.
#[derive(Clone, Debug)]
pub struct GuardHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    endpoints: Mutex<Arc<Vec<Endpoint>>>,
    held: AtomicUsize,
    stale_since: Mutex<Option<Instant>>,
    updates_applied: AtomicU64,
    updates_held: AtomicU64,
    backend_errors: AtomicU64,
}

impl GuardHandle {
    /// The endpoints served now (what the stream has yielded so far, held
    /// removals included), sorted by id.
    pub fn endpoints(&self) -> Arc<Vec<Endpoint>> {
        self.shared.endpoints.lock().clone()
    }

    /// How many removals self-preservation holds now.
    pub fn held_removals(&self) -> usize {
        self.shared.held.load(Ordering::Relaxed)
    }

    /// How long the served set has gone unconfirmed: zero unless the source's
    /// latest item is an error.
    pub fn staleness(&self) -> Duration {
        match *self.shared.stale_since.lock() {
            Some(since) => Instant::now().saturating_duration_since(since),
            None => Duration::ZERO,
        }
    }

    /// Batches that changed the served set.
    pub fn updates_applied(&self) -> u64 {
        self.shared.updates_applied.load(Ordering::Relaxed)
    }

    /// Updates held by self-preservation.
    pub fn updates_held(&self) -> u64 {
        self.shared.updates_held.load(Ordering::Relaxed)
    }

    /// Error items from the source.
    pub fn backend_errors(&self) -> u64 {
        self.shared.backend_errors.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct Metrics {
    endpoints: metrics::Gauge,
    updates_applied: metrics::Counter,
    updates_held: metrics::Counter,
    backend_errors: metrics::Counter,
    staleness: metrics::Gauge,
}

impl Metrics {
    fn new(name: &str) -> Self {
        let labels = [("name", name.to_owned())];
        let m = Metrics {
            endpoints: metrics::gauge!("watertight_discovery_endpoints", &labels),
            updates_applied: metrics::counter!(
                "watertight_discovery_updates_applied_total",
                &labels
            ),
            updates_held: metrics::counter!("watertight_discovery_updates_held_total", &labels),
            backend_errors: metrics::counter!("watertight_discovery_backend_errors_total", &labels),
            staleness: metrics::gauge!("watertight_discovery_staleness_seconds", &labels),
        };
        m.endpoints.set(0.0);
        m.staleness.set(0.0);
        m
    }
}

#[derive(Debug)]
struct Hold {
    confirm_at: Instant,
}

/// The guard's state machine, separate from the polling.
struct State {
    config: Guard,
    /// The set as the source describes it.
    upstream: Set,
    /// The set served downstream.
    applied: Set,
    /// When the pending batch applies, if changes are pending.
    batch_deadline: Option<Instant>,
    hold: Option<Hold>,
    /// Since when each served endpoint has been missing from the source,
    /// while a removal is held.
    missing: BTreeMap<EndpointId, Instant>,
    last_ok: Instant,
    stale: bool,
    metrics: Metrics,
    shared: Arc<Shared>,
}

impl State {
    fn emit(&self, event: Event) {
        if let Some(listener) = &self.config.listener {
            listener(&event);
        }
    }

    fn on_change(&mut self, change: Change, now: Instant) {
        set::apply(&mut self.upstream, change);
        // A held endpoint that comes back, even for a moment, starts over.
        if !self.missing.is_empty() {
            let upstream = &self.upstream;
            self.missing.retain(|id, _| !upstream.contains_key(id));
        }
        if self.batch_deadline.is_none() {
            self.batch_deadline = Some(now + self.config.debounce);
        }
        self.last_ok = now;
        if self.stale {
            self.stale = false;
            let stale_for = self
                .shared
                .stale_since
                .lock()
                .take()
                .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
            self.metrics.staleness.set(0.0);
            tracing::info!(target: TARGET, name = %self.config.name, ?stale_for, "discovery source recovered");
            self.emit(Event::Recovered { stale_for });
        }
    }

    fn on_error(&mut self, error: &Error, now: Instant) {
        self.shared.backend_errors.fetch_add(1, Ordering::Relaxed);
        self.metrics.backend_errors.increment(1);
        if !self.stale {
            self.stale = true;
            *self.shared.stale_since.lock() = Some(self.last_ok);
        }
        let stale_for = now.saturating_duration_since(self.last_ok);
        self.metrics.staleness.set(stale_for.as_secs_f64());
        tracing::warn!(
            target: TARGET,
            name = %self.config.name,
            %error,
            endpoints = self.applied.len(),
            "discovery source error; keeping the last known good set"
        );
        self.emit(Event::BackendError {
            message: error.to_string(),
        });
    }

    /// Whether removing `n` of `served` endpoints at once needs
    /// confirmation.
    fn exceeds(&self, n: usize, served: usize) -> bool {
        n > 0
            && !self.config.confirm_after.is_zero()
            && n as f64 > self.config.max_removal_ratio * served as f64
    }

    /// Brings the served set towards the source's: at the end of a batch and
    /// when a hold's time is up.
    ///
    /// Additions and updates apply at once. Removals apply at once when they
    /// are few enough; otherwise each waits until it has been missing from
    /// the source for `confirm_after`, and what is left is judged again
    /// against the set that remains.
    fn settle(&mut self, now: Instant, out: &mut VecDeque<Result<Change, Error>>) {
        let (upserts, removals) = set::diff(&self.applied, &self.upstream);
        self.missing.retain(|id, _| removals.contains(id));
        for id in &removals {
            self.missing.entry(id.clone()).or_insert(now);
        }
        let was_held = self.hold.is_some();
        // Judged against the set served before this batch's additions: a
        // wholesale replacement is held like a wholesale removal.
        let mut served = self.applied.len();
        let inserted = upserts.len();
        self.publish(upserts, Vec::new(), out);

        let mut removed = 0;
        let mut confirmed = 0;
        let mut left = removals;
        if self.exceeds(left.len(), served) {
            let confirm_after = self.config.confirm_after;
            let (old, young): (Vec<_>, Vec<_>) = left
                .into_iter()
                .partition(|id| now.saturating_duration_since(self.missing[id]) >= confirm_after);
            confirmed = old.len();
            removed += old.len();
            served -= old.len();
            self.publish(Vec::new(), old, out);
            left = young;
        }
        if self.exceeds(left.len(), served) {
            let confirm_at = left
                .iter()
                .map(|id| self.missing[id] + self.config.confirm_after)
                .min()
                .unwrap_or(now);
            self.shared.held.store(left.len(), Ordering::Relaxed);
            if inserted > 0 || removed > 0 {
                self.emit(Event::Applied {
                    inserted,
                    removed,
                    endpoints: self.applied.len(),
                });
            }
            let starts = self.hold.replace(Hold { confirm_at }).is_none();
            if starts {
                self.shared.updates_held.fetch_add(1, Ordering::Relaxed);
                self.metrics.updates_held.increment(1);
                tracing::warn!(
                    target: TARGET,
                    name = %self.config.name,
                    removals = left.len(),
                    endpoints = self.applied.len(),
                    confirm_after = ?self.config.confirm_after,
                    "self-preservation: holding a mass removal until it is confirmed"
                );
                self.emit(Event::Held {
                    removals: left.len(),
                    endpoints: self.applied.len(),
                    confirm_at,
                });
            }
            return;
        }
        removed += left.len();
        let reverted = was_held && confirmed == 0;
        self.publish(Vec::new(), left, out);
        self.hold = None;
        self.missing.clear();
        self.shared.held.store(0, Ordering::Relaxed);
        if was_held {
            let endpoints = self.applied.len();
            if reverted {
                tracing::info!(target: TARGET, name = %self.config.name, removed, endpoints, "self-preservation: held removal reverted");
                self.emit(Event::Released { removed, endpoints });
            } else {
                tracing::warn!(target: TARGET, name = %self.config.name, removed, endpoints, "self-preservation: mass removal persisted; applied");
                self.emit(Event::Confirmed { removed, endpoints });
            }
            if inserted > 0 {
                self.emit(Event::Applied {
                    inserted,
                    removed: 0,
                    endpoints,
                });
            }
        } else if inserted + removed > 0 {
            self.emit(Event::Applied {
                inserted,
                removed,
                endpoints: self.applied.len(),
            });
        }
    }

    fn publish(
        &mut self,
        upserts: Vec<Endpoint>,
        removals: Vec<EndpointId>,
        out: &mut VecDeque<Result<Change, Error>>,
    ) {
        if upserts.is_empty() && removals.is_empty() {
            return;
        }
        for e in upserts {
            self.applied.insert(e.id.clone(), e.clone());
            out.push_back(Ok(Change::Insert(e)));
        }
        for id in removals {
            self.applied.remove(&id);
            out.push_back(Ok(Change::Remove(id)));
        }
        self.shared.updates_applied.fetch_add(1, Ordering::Relaxed);
        self.metrics.updates_applied.increment(1);
        self.metrics.endpoints.set(self.applied.len() as f64);
        *self.shared.endpoints.lock() = Arc::new(self.applied.values().cloned().collect());
        tracing::debug!(
            target: TARGET,
            name = %self.config.name,
            endpoints = self.applied.len(),
            "discovery update applied"
        );
    }
}

/// A source stream behind a [`Guard`]; see the [module docs](self).
///
/// Yields the source's errors unchanged and the changes that take the served
/// set from batch to batch. Ends when the source ends and nothing is pending.
#[pin_project]
pub struct Guarded<St> {
    #[pin]
    inner: St,
    inner_done: bool,
    state: State,
    batch_timer: Option<Pin<Box<Sleep>>>,
    hold_timer: Option<Pin<Box<Sleep>>>,
    out: VecDeque<Result<Change, Error>>,
    handle: GuardHandle,
}

impl<St: fmt::Debug> fmt::Debug for Guarded<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("inner", &self.inner)
            .field("config", &self.state.config)
            .field("endpoints", &self.state.applied.len())
            .field("held", &self.state.hold.is_some())
            .finish()
    }
}

impl<St> Guarded<St> {
    /// A handle to observe this stream.
    pub fn handle(&self) -> GuardHandle {
        self.handle.clone()
    }

    /// The source.
    pub fn get_ref(&self) -> &St {
        &self.inner
    }

    /// The source, mutably.
    pub fn get_mut(&mut self) -> &mut St {
        &mut self.inner
    }

    /// The source, dropping the guard's state.
    pub fn into_inner(self) -> St {
        self.inner
    }
}

/// Polls a lazily created timer set to `deadline`.
fn poll_timer(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: Instant,
    cx: &mut Context<'_>,
) -> bool {
    let sleep = match timer {
        Some(sleep) => {
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            sleep
        }
        None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
    };
    sleep.as_mut().poll(cx).is_ready()
}

impl<St> Stream for Guarded<St>
where
    St: Stream<Item = Result<Change, Error>>,
{
    type Item = Result<Change, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            if let Some(item) = this.out.pop_front() {
                return Poll::Ready(Some(item));
            }
            if !*this.inner_done {
                match this.inner.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(change))) => {
                        this.state.on_change(change, Instant::now());
                        continue;
                    }
                    Poll::Ready(Some(Err(error))) => {
                        this.state.on_error(&error, Instant::now());
                        this.out.push_back(Err(error));
                        continue;
                    }
                    Poll::Ready(None) => *this.inner_done = true,
                    Poll::Pending => {}
                }
            }
            if let Some(deadline) = this.state.batch_deadline {
                // The source has nothing more ready: a zero debounce (or an
                // ended source) applies now.
                if this.state.config.debounce.is_zero()
                    || *this.inner_done
                    || poll_timer(this.batch_timer, deadline, cx)
                {
                    this.state.batch_deadline = None;
                    this.state.settle(Instant::now(), this.out);
                    continue;
                }
            }
            if let Some(hold) = &this.state.hold {
                let confirm_at = hold.confirm_at;
                if poll_timer(this.hold_timer, confirm_at, cx) {
                    this.state.settle(Instant::now(), this.out);
                    continue;
                }
            }
            if *this.inner_done && this.state.batch_deadline.is_none() && this.state.hold.is_none()
            {
                return Poll::Ready(None);
            }
            return Poll::Pending;
        }
    }
}
