//! One breaker per key: per host, route or tenant.
//!
//! A [`KeyedCircuitBreaker`] extracts a key from each request and sends the
//! call through that key's breaker, created on the key's first call with the
//! configuration every key shares. So one failing host or tenant opens its
//! own breaker and no one else's.
//!
//! Keys are bounded two ways: a key that has seen no call for
//! `idle_timeout` is evicted (lazily, at most once per `idle_timeout`, or
//! when the map is full), and once `max_keys` keys are live a call for a new
//! key fails with [`TooManyKeys`] instead of growing the map. A breaker put
//! in a manual state through its handle (forced open, disabled,
//! metrics-only) is never evicted: an operator's decision outlives idleness.
//!
//! The key is known only when `call` sees the request, so keyed breakers
//! always fail fast; [`Mode::Backpressure`] is a configuration error.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use metrics::{Counter, Gauge};
use parking_lot::RwLock;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;
use watertight_core::config::non_zero;
use watertight_core::{BoxError, Classify, ErrorsAsFailures};

use crate::breaker::{Breaker, TARGET};
use crate::config::{Builder, Config, Mode};
use crate::error::{ConfigError, TooManyKeys, COMPONENT};
use crate::event::Listener;
use crate::future::ResponseFuture;
use crate::handle::CircuitBreakerHandle;
use crate::State;

const DEFAULT_MAX_KEYS: usize = 1_000;
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// What a key must be: hashable, comparable, and printable for the `key`
/// label of its breaker's metrics and the `key` of its events.
pub trait Key: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static {}

impl<T: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static> Key for T {}

/// Builds a [`KeyedCircuitBreakerLayer`]; made by
/// [`Builder::keyed`](crate::Builder::keyed), which carries the breakers'
/// configuration.
pub struct KeyedBuilder<F, K, C = ErrorsAsFailures> {
    builder: Builder<C>,
    extract: F,
    max_keys: usize,
    idle_timeout: Duration,
    _key: PhantomData<fn() -> K>,
}

impl<F, K, C: fmt::Debug> fmt::Debug for KeyedBuilder<F, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBuilder")
            .field("builder", &self.builder)
            .field("max_keys", &self.max_keys)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl<F, K, C> KeyedBuilder<F, K, C> {
    pub(crate) fn new(builder: Builder<C>, extract: F) -> Self {
        KeyedBuilder {
            builder,
            extract,
            max_keys: DEFAULT_MAX_KEYS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            _key: PhantomData,
        }
    }

    /// The most keys held at once (default 1,000); a call for one more
    /// fails with [`TooManyKeys`] once no idle key can be evicted.
    pub fn max_keys(mut self, max: usize) -> Self {
        self.max_keys = max;
        self
    }

    /// A key without a call for this long is evicted (default 5 minutes),
    /// unless its breaker is in a manual state.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Validates the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field: those of
    /// [`Builder::build`], then `group` if one was given (keyed breakers
    /// join none), `mode` if it is [`Mode::Backpressure`], `max_keys` if
    /// zero, `idle_timeout` if zero.
    pub fn build(self) -> Result<KeyedCircuitBreakerLayer<F, K, C>, ConfigError> {
        let (config, classify, listener, group) = self.builder.into_parts()?;
        if group.is_some() {
            return Err(ConfigError::new(
                COMPONENT,
                "group",
                "is for the breakers of a `CircuitBreakerLayer`, not keyed ones",
            ));
        }
        if config.mode == Mode::Backpressure {
            return Err(ConfigError::new(COMPONENT,
                "mode",
                "must be `fail_fast` for a keyed breaker: the key is known only when `call` sees the request",
            ));
        }
        if self.max_keys == 0 {
            return Err(ConfigError::new(
                COMPONENT,
                "max_keys",
                "must be at least 1",
            ));
        }
        non_zero(COMPONENT, "idle_timeout", self.idle_timeout)?;
        Ok(KeyedCircuitBreakerLayer {
            config: Arc::new(config),
            classify,
            listener,
            extract: self.extract,
            max_keys: self.max_keys,
            idle_timeout: self.idle_timeout,
            shared: None,
        })
    }
}

/// Wraps services in a [`KeyedCircuitBreaker`]. Made with
/// [`Builder::keyed`](crate::Builder::keyed).
///
/// # Clone
///
/// The layer is configuration: each service it wraps gets a key map of its
/// own, shared by that service's clones. A layer from
/// [`shared`](Self::shared) wraps every service in one key map.
pub struct KeyedCircuitBreakerLayer<F, K, C = ErrorsAsFailures> {
    config: Arc<Config>,
    classify: C,
    listener: Option<Listener>,
    extract: F,
    max_keys: usize,
    idle_timeout: Duration,
    shared: Option<Arc<Keys<K>>>,
}

impl<F: Clone, K, C: Clone> Clone for KeyedCircuitBreakerLayer<F, K, C> {
    fn clone(&self) -> Self {
        KeyedCircuitBreakerLayer {
            config: self.config.clone(),
            classify: self.classify.clone(),
            listener: self.listener.clone(),
            extract: self.extract.clone(),
            max_keys: self.max_keys,
            idle_timeout: self.idle_timeout,
            shared: self.shared.clone(),
        }
    }
}

impl<F, K, C: fmt::Debug> fmt::Debug for KeyedCircuitBreakerLayer<F, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("config", &self.config)
            .field("classify", &self.classify)
            .field("max_keys", &self.max_keys)
            .field("idle_timeout", &self.idle_timeout)
            .field("on_event", &self.listener.is_some())
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, K: Key, C> KeyedCircuitBreakerLayer<F, K, C> {
    /// The configuration every key's breaker follows.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The most keys held at once.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// How long a key may go without a call before it is evicted.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Creates one key map and returns a layer that wraps every service in
    /// it, with the map's handle.
    pub fn shared(&self) -> (Self, KeyedHandle<K>)
    where
        F: Clone,
        C: Clone,
    {
        let keys = self.new_keys();
        let handle = KeyedHandle { keys: keys.clone() };
        let mut layer = self.clone();
        layer.shared = Some(keys);
        (layer, handle)
    }

    fn new_keys(&self) -> Arc<Keys<K>> {
        Arc::new(Keys::new(
            self.config.clone(),
            self.listener.clone(),
            self.max_keys,
            self.idle_timeout,
        ))
    }
}

impl<S, F: Clone, K: Key, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<F, K, C> {
    type Service = KeyedCircuitBreaker<S, F, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        let keys = match &self.shared {
            Some(k) => k.clone(),
            None => self.new_keys(),
        };
        KeyedCircuitBreaker {
            inner,
            extract: self.extract.clone(),
            classify: self.classify.clone(),
            keys,
        }
    }
}

/// A breaker per key around a service. See the [module docs](self).
///
/// `poll_ready` is the inner service's; `call` picks the request's breaker
/// and fails at once with [`error::Open`](crate::error::Open) when it
/// rejects, or with [`TooManyKeys`] when the request's key is new and the
/// map is full. Errors are [`BoxError`]s.
///
/// # Clone
///
/// Clones share the key map (and its handle).
pub struct KeyedCircuitBreaker<S, F, K, C = ErrorsAsFailures> {
    inner: S,
    extract: F,
    classify: C,
    keys: Arc<Keys<K>>,
}

impl<S, F, K, C> KeyedCircuitBreaker<S, F, K, C> {
    /// The handle of the key map: each key's breaker handle, the keys.
    pub fn handle(&self) -> KeyedHandle<K> {
        KeyedHandle {
            keys: self.keys.clone(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the breaker, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, F: Clone, K, C: Clone> Clone for KeyedCircuitBreaker<S, F, K, C> {
    fn clone(&self) -> Self {
        KeyedCircuitBreaker {
            inner: self.inner.clone(),
            extract: self.extract.clone(),
            classify: self.classify.clone(),
            keys: self.keys.clone(),
        }
    }
}

impl<S: fmt::Debug, F, K, C: fmt::Debug> fmt::Debug for KeyedCircuitBreaker<S, F, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .field("classify", &self.classify)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl<S, F, K, C, Req> Service<Req> for KeyedCircuitBreaker<S, F, K, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    F: Fn(&Req) -> K,
    K: Key,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = (self.extract)(&req);
        let breaker = match self.keys.breaker(key, Instant::now()) {
            Ok(b) => b,
            Err(e) => return ResponseFuture::rejected(Box::new(e)),
        };
        ResponseFuture::admitted(
            &breaker,
            breaker.admit(),
            || self.inner.call(req),
            &self.classify,
        )
    }
}

/// Observes and controls the breakers of a [`KeyedCircuitBreaker`].
///
/// # Clone
///
/// Cheap: clones share the key map.
pub struct KeyedHandle<K> {
    keys: Arc<Keys<K>>,
}

impl<K> Clone for KeyedHandle<K> {
    fn clone(&self) -> Self {
        KeyedHandle {
            keys: self.keys.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedHandle")
            .field("name", &self.keys.config.name)
            .field("keys", &self.keys.len())
            .field("max_keys", &self.keys.max_keys)
            .finish()
    }
}

impl<K: Key> KeyedHandle<K> {
    /// The handle of `key`'s breaker, if the key is live.
    pub fn get(&self, key: &K) -> Option<CircuitBreakerHandle> {
        self.keys
            .map
            .read()
            .get(key)
            .map(|e| CircuitBreakerHandle::new(e.breaker.clone()))
    }

    /// The live keys, in no particular order.
    pub fn keys(&self) -> Vec<K> {
        self.keys.map.read().keys().cloned().collect()
    }

    /// Evicts every idle key now, returning how many went.
    pub fn evict_idle(&self) -> usize {
        self.keys.sweep(Instant::now())
    }
}

impl<K> KeyedHandle<K> {
    /// The number of live keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most keys held at once.
    pub fn max_keys(&self) -> usize {
        self.keys.max_keys
    }
}

struct Entry {
    breaker: Arc<Breaker>,
    /// Nanoseconds after the map's epoch of the key's latest call.
    last_used: AtomicU64,
}

/// The key map shared by a keyed service's clones and handles.
pub(crate) struct Keys<K> {
    map: RwLock<HashMap<K, Entry>>,
    config: Arc<Config>,
    listener: Option<Listener>,
    max_keys: usize,
    idle_nanos: u64,
    epoch: Instant,
    /// Nanoseconds after `epoch` of the next lazy sweep.
    next_sweep: AtomicU64,
    keys_gauge: Gauge,
    evicted: Counter,
    refused: Counter,
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

impl<K> Keys<K> {
    fn new(
        config: Arc<Config>,
        listener: Option<Listener>,
        max_keys: usize,
        idle_timeout: Duration,
    ) -> Self {
        let labels = [("name", config.name.clone())];
        let keys_gauge = metrics::gauge!("watertight_circuit_breaker_keys", &labels);
        keys_gauge.set(0.0);
        let idle_nanos = nanos(idle_timeout);
        Keys {
            map: RwLock::new(HashMap::new()),
            evicted: metrics::counter!("watertight_circuit_breaker_keys_evicted_total", &labels),
            refused: metrics::counter!("watertight_circuit_breaker_keys_refused_total", &labels),
            keys_gauge,
            config,
            listener,
            max_keys,
            idle_nanos,
            epoch: Instant::now(),
            next_sweep: AtomicU64::new(idle_nanos),
        }
    }

    fn len(&self) -> usize {
        self.map.read().len()
    }

    fn since_epoch(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.epoch))
    }
}

impl<K: Key> Keys<K> {
    /// `key`'s breaker, created if new.
    fn breaker(&self, key: K, now: Instant) -> Result<Arc<Breaker>, TooManyKeys> {
        let t = self.since_epoch(now);
        let due = self.next_sweep.load(Relaxed);
        // One caller sweeps; the others go on.
        if t >= due
            && self
                .next_sweep
                .compare_exchange(due, t.saturating_add(self.idle_nanos), Relaxed, Relaxed)
                .is_ok()
        {
            self.sweep(now);
        }
        if let Some(e) = self.map.read().get(&key) {
            e.last_used.store(t, Relaxed);
            return Ok(e.breaker.clone());
        }
        let mut map = self.map.write();
        if let Some(e) = map.get(&key) {
            e.last_used.store(t, Relaxed);
            return Ok(e.breaker.clone());
        }
        if map.len() >= self.max_keys && self.evict(&mut map, t) == 0 {
            self.refused.increment(1);
            tracing::debug!(
                target: TARGET, name = %self.config.name, key = %key, max_keys = self.max_keys,
                "circuit breaker key refused: every key is live"
            );
            return Err(TooManyKeys::new(self.max_keys));
        }
        let label: Arc<str> = Arc::from(key.to_string());
        let breaker = Arc::new(Breaker::new(
            &self.config,
            self.listener.clone(),
            Some(label),
            None,
        ));
        map.insert(
            key,
            Entry {
                breaker: breaker.clone(),
                last_used: AtomicU64::new(t),
            },
        );
        self.keys_gauge.set(map.len() as f64);
        Ok(breaker)
    }

    /// Evicts idle keys now; returns how many went.
    fn sweep(&self, now: Instant) -> usize {
        let t = self.since_epoch(now);
        let mut map = self.map.write();
        self.evict(&mut map, t)
    }

    fn evict(&self, map: &mut HashMap<K, Entry>, t: u64) -> usize {
        self.next_sweep
            .store(t.saturating_add(self.idle_nanos), Relaxed);
        let before = map.len();
        map.retain(|key, e| {
            let idle = t.saturating_sub(e.last_used.load(Relaxed)) >= self.idle_nanos;
            let manual = matches!(
                e.breaker.state(),
                State::ForcedOpen | State::Disabled | State::MetricsOnly
            );
            let keep = !idle || manual;
            if !keep {
                tracing::debug!(
                    target: TARGET, name = %self.config.name, key = %key,
                    "idle circuit breaker key evicted"
                );
            }
            keep
        });
        let gone = before - map.len();
        if gone > 0 {
            self.evicted.increment(gone as u64);
            self.keys_gauge.set(map.len() as f64);
        }
        gone
    }
}
