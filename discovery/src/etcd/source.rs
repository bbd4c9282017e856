use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use etcd_client::{ConnectOptions, KeyValue};
use futures_core::Stream;
use watertight_core::{Backoff, Change, Endpoint, EndpointId};

use super::{PrefixEvent, PrefixWatch};
use crate::driver::{self, BoxSource, Driver};
use crate::error::{Backend, ConfigError, InvalidEntry, COMPONENT};
use crate::set;
use crate::Error;

const TARGET: &str = "watertight_discovery";

/// Builds an [`Etcd`] source.
#[derive(Clone)]
pub struct EtcdBuilder {
    endpoints: Vec<String>,
    prefix: String,
    options: ConnectOptions,
    reconnect: Backoff,
    seed: Option<u64>,
}

impl fmt::Debug for EtcdBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdBuilder")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("reconnect", &self.reconnect)
            .finish()
    }
}

impl EtcdBuilder {
    /// Connection options (TLS, credentials, timeouts); default
    /// [`default_connect_options`](super::default_connect_options).
    pub fn connect_options(mut self, options: ConnectOptions) -> Self {
        self.options = options;
        self
    }

    /// The delays between reconnection attempts; default equal jitter from
    /// 100 ms to 10 s. Reset once a watch is established.
    pub fn reconnect_backoff(mut self, backoff: Backoff) -> Self {
        self.reconnect = backoff;
        self
    }

    /// Seeds the backoff jitter, for deterministic tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Validates and builds. Nothing connects until the stream is first
    /// polled.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when there are no etcd endpoints (`endpoints`) or the
    /// prefix is empty (`prefix`: a source watches one service, never the
    /// whole key space).
    pub fn build(self) -> Result<Etcd, ConfigError> {
        if self.endpoints.is_empty() {
            return Err(ConfigError::new(
                COMPONENT,
                "endpoints",
                "must not be empty",
            ));
        }
        if self.prefix.is_empty() {
            return Err(ConfigError::new(COMPONENT, "prefix", "must not be empty"));
        }
        let retries = match self.seed {
            Some(seed) => self.reconnect.sequence_seeded(seed),
            None => self.reconnect.sequence(),
        };
        let driver = EtcdDriver {
            watch: PrefixWatch::new(self.endpoints, self.prefix.clone(), self.options, retries),
            by_key: BTreeMap::new(),
            announce: false,
            queue: VecDeque::new(),
        };
        Ok(Etcd {
            prefix: self.prefix,
            inner: driver::drive(driver),
        })
    }
}

/// A source of endpoints stored under an etcd key prefix; see the
/// [module docs](super).
///
/// ```no_run
/// use futures_util::StreamExt;
/// use watertight_discovery::{Etcd, Guard, SourceExt};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let guard = Guard::builder().name("api").build()?;
/// let mut api = Etcd::builder(["http://127.0.0.1:2379"], "/services/api/")
///     .build()?
///     .guarded(&guard);
/// while let Some(item) = api.next().await {
///     println!("{item:?}");
/// }
/// # Ok(()) }
/// ```
pub struct Etcd {
    prefix: String,
    inner: BoxSource,
}

impl fmt::Debug for Etcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etcd")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Etcd {
    /// A builder for a source of the endpoints under `prefix` on the etcd
    /// cluster at `endpoints` (`http://host:2379`).
    pub fn builder<E: Into<String>>(
        endpoints: impl IntoIterator<Item = E>,
        prefix: impl Into<String>,
    ) -> EtcdBuilder {
        EtcdBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: prefix.into(),
            options: super::default_connect_options(),
            reconnect: super::default_reconnect_backoff(),
            seed: None,
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Stream for Etcd {
    type Item = Result<Change, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

struct EtcdDriver {
    watch: PrefixWatch,
    /// The last valid endpoint of every key.
    by_key: BTreeMap<Vec<u8>, Endpoint>,
    /// The next established watch re-announces the set.
    announce: bool,
    queue: VecDeque<Result<Change, Error>>,
}

fn key_str(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

impl EtcdDriver {
    fn prefix(&self) -> &str {
        self.watch.prefix()
    }

    fn current(&self) -> Vec<Endpoint> {
        set::from_list(self.by_key.values().cloned())
            .into_values()
            .collect()
    }

    /// The change for `id` once a key that held it is gone: another key may
    /// still hold the same id.
    fn id_left(&self, id: &EndpointId) -> Change {
        match self.by_key.values().find(|e| e.id == *id) {
            Some(other) => Change::Insert(other.clone()),
            None => Change::Remove(id.clone()),
        }
    }

    fn invalid(&mut self, key: &[u8], message: String) {
        let e = InvalidEntry {
            key: key_str(key),
            message,
        };
        tracing::warn!(target: TARGET, error = %e, "skipping an invalid etcd entry");
        self.queue.push_back(Err(e.into()));
    }

    /// The whole prefix, read again: the new set.
    fn snapshot(&mut self, revision: i64, kvs: Vec<KeyValue>) {
        let old = std::mem::take(&mut self.by_key);
        for kv in kvs {
            match super::decode(kv.value()) {
                Ok(ep) => {
                    self.by_key.insert(kv.key().to_vec(), ep);
                }
                Err(message) => {
                    // Keep what the key held before, if anything.
                    if let Some(ep) = old.get(kv.key()) {
                        self.by_key.insert(kv.key().to_vec(), ep.clone());
                    }
                    self.invalid(kv.key(), message);
                }
            }
        }
        tracing::info!(target: TARGET, prefix = %self.prefix(), revision, endpoints = self.by_key.len(), "etcd prefix read");
        self.queue.push_back(Ok(Change::Reset(self.current())));
        self.announce = false;
    }

    fn put(&mut self, key: &[u8], value: &[u8]) {
        let ep = match super::decode(value) {
            Ok(ep) => ep,
            Err(message) => return self.invalid(key, message),
        };
        let old = self.by_key.insert(key.to_vec(), ep.clone());
        if old.as_ref() == Some(&ep) {
            return;
        }
        if let Some(old) = old.filter(|old| old.id != ep.id) {
            let change = self.id_left(&old.id);
            self.queue.push_back(Ok(change));
        }
        self.queue.push_back(Ok(Change::Insert(ep)));
    }

    fn delete(&mut self, key: &[u8]) {
        if let Some(old) = self.by_key.remove(key) {
            let change = self.id_left(&old.id);
            self.queue.push_back(Ok(change));
        }
    }

    fn on_event(&mut self, event: PrefixEvent) {
        match event {
            PrefixEvent::Snapshot { revision, kvs } => self.snapshot(revision, kvs),
            PrefixEvent::Watching { revision } => {
                if self.announce {
                    self.announce = false;
                    tracing::info!(target: TARGET, prefix = %self.prefix(), revision, "etcd watch resumed");
                    self.queue.push_back(Ok(Change::Reset(self.current())));
                }
            }
            PrefixEvent::Put(kv) => self.put(kv.key(), kv.value()),
            PrefixEvent::Delete(kv) => self.delete(kv.key()),
            PrefixEvent::Compacted {
                revision,
                compacted,
            } => {
                tracing::warn!(target: TARGET, prefix = %self.prefix(), revision, compacted, "etcd compacted past the watch; reading the prefix again");
            }
            PrefixEvent::Disconnected { error, retry_in } => {
                tracing::warn!(target: TARGET, prefix = %self.prefix(), %error, ?retry_in, endpoints = self.by_key.len(), "etcd unavailable; keeping the last known set");
                // Once the watch is back, say the set is in sync again.
                self.announce = self.watch.revision() > 0;
                let e = Backend::new("etcd", self.prefix().to_owned(), error);
                self.queue.push_back(Err(e.into()));
            }
        }
    }
}

impl Driver for EtcdDriver {
    async fn next(&mut self) -> Result<Change, Error> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return item;
            }
            let event = self.watch.next().await;
            self.on_event(event);
        }
    }
}
