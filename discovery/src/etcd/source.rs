use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, WatchOptions, WatchResponse, WatchStream,
};
use futures_core::Stream;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use watertight_core::backoff::Sequence;
use watertight_core::{Backoff, Change, Endpoint, EndpointId};

use crate::driver::{self, BoxSource, Driver};
use crate::error::{Backend, ConfigError, InvalidEntry};
use crate::set;
use crate::Error;

const TARGET: &str = "watertight_discovery";

/// Builds an [`Etcd`] source.
#[derive(Clone)]
pub struct EtcdBuilder {
    endpoints: Vec<String>,
    prefix: String,
    options: Option<ConnectOptions>,
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
    /// Connection options (TLS, credentials, timeouts). By default: connect
    /// timeout 5 s, HTTP/2 keep-alive every 10 s with a 5 s timeout, TCP
    /// keep-alive 30 s.
    pub fn connect_options(mut self, options: ConnectOptions) -> Self {
        self.options = Some(options);
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
            return Err(ConfigError::new("endpoints", "must not be empty"));
        }
        if self.prefix.is_empty() {
            return Err(ConfigError::new("prefix", "must not be empty"));
        }
        let rng = match self.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        };
        let driver = EtcdDriver {
            endpoints: self.endpoints,
            prefix: self.prefix.clone(),
            options: self.options,
            retries: self.reconnect.sequence_with_rng(rng),
            client: None,
            watch: None,
            by_key: BTreeMap::new(),
            revision: 0,
            resync: true,
            announce: false,
            wait: None,
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
            options: None,
            reconnect: Backoff::equal_jitter(Duration::from_millis(100), Duration::from_secs(10))
                .expect("valid constant backoff"),
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
    endpoints: Vec<String>,
    prefix: String,
    options: Option<ConnectOptions>,
    retries: Sequence,
    client: Option<Client>,
    watch: Option<WatchStream>,
    /// The last valid endpoint of every key.
    by_key: BTreeMap<Vec<u8>, Endpoint>,
    /// The last revision seen; the watch resumes after it.
    revision: i64,
    /// The next connection reads the whole prefix.
    resync: bool,
    /// The next established watch re-announces the set.
    announce: bool,
    wait: Option<Duration>,
    queue: VecDeque<Result<Change, Error>>,
}

fn key_str(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

impl EtcdDriver {
    fn backend(&self, e: impl Into<watertight_core::BoxError>) -> Error {
        Backend::new("etcd", self.prefix.clone(), e).into()
    }

    /// The connection is gone: report, keep the set, retry later.
    fn disconnect(&mut self, error: Error) {
        let wait = self.retries.next_delay();
        tracing::warn!(target: TARGET, prefix = %self.prefix, %error, retry_in = ?wait, endpoints = self.by_key.len(), "etcd unavailable; keeping the last known set");
        self.queue.push_back(Err(error));
        self.client = None;
        self.watch = None;
        self.wait = Some(wait);
        self.announce = self.revision > 0;
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

    /// Connects if needed, reads the prefix if needed, and starts the watch.
    async fn establish(&mut self) -> Result<(), Error> {
        let mut client = match self.client.take() {
            Some(c) => c,
            None => super::connect(&self.endpoints, &self.options)
                .await
                .map_err(|e| self.backend(e))?,
        };
        if self.resync {
            let resp = client
                .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
                .await
                .map_err(|e| self.backend(e))?;
            let revision = resp.header().map_or(0, |h| h.revision());
            let old = std::mem::take(&mut self.by_key);
            for kv in resp.kvs() {
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
            tracing::info!(target: TARGET, prefix = %self.prefix, revision, endpoints = self.by_key.len(), "etcd prefix read");
            self.queue.push_back(Ok(Change::Reset(self.current())));
            self.revision = revision;
            self.resync = false;
            self.announce = false;
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.revision + 1);
        let watch = client
            .watch(self.prefix.as_str(), Some(options))
            .await
            .map_err(|e| self.backend(e))?;
        self.client = Some(client);
        self.watch = Some(watch);
        Ok(())
    }

    fn on_response(&mut self, resp: WatchResponse) {
        if resp.canceled() {
            self.watch = None;
            if resp.compact_revision() > 0 {
                tracing::warn!(
                    target: TARGET,
                    prefix = %self.prefix,
                    revision = self.revision,
                    compacted = resp.compact_revision(),
                    "etcd compacted past the watch; reading the prefix again"
                );
                self.resync = true;
            } else {
                let reason = format!("watch canceled: {}", resp.cancel_reason());
                let e = self.backend(reason);
                self.disconnect(e);
            }
            return;
        }
        if resp.created() {
            self.retries.reset();
            if self.announce {
                self.announce = false;
                tracing::info!(target: TARGET, prefix = %self.prefix, revision = self.revision, "etcd watch resumed");
                self.queue.push_back(Ok(Change::Reset(self.current())));
            }
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            match ev.event_type() {
                EventType::Put => self.put(kv.key(), kv.value()),
                EventType::Delete => self.delete(kv.key()),
            }
            self.revision = self.revision.max(kv.mod_revision());
        }
    }
}

impl Driver for EtcdDriver {
    async fn next(&mut self) -> Result<Change, Error> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return item;
            }
            if let Some(wait) = self.wait.take() {
                tokio::time::sleep(wait).await;
            }
            let Some(watch) = self.watch.as_mut() else {
                if let Err(e) = self.establish().await {
                    self.disconnect(e);
                }
                continue;
            };
            match watch.message().await {
                Ok(Some(resp)) => self.on_response(resp),
                Ok(None) => {
                    let e = self.backend("watch stream closed by the server");
                    self.disconnect(e);
                }
                Err(e) => {
                    let e = self.backend(e);
                    self.disconnect(e);
                }
            }
        }
    }
}
