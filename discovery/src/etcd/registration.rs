use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, PutOptions};
use tokio::task::JoinHandle;
use watertight_core::backoff::Sequence;
use watertight_core::{config, Backoff, BoxError, Endpoint};

use crate::error::{Backend, ConfigError, COMPONENT};

const TARGET: &str = "watertight_discovery";

/// Builds a [`Registration`].
#[derive(Clone)]
pub struct RegistrationBuilder {
    endpoints: Vec<String>,
    prefix: String,
    endpoint: Endpoint,
    ttl: Duration,
    options: ConnectOptions,
    retry: Backoff,
    seed: Option<u64>,
}

impl fmt::Debug for RegistrationBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationBuilder")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("ttl", &self.ttl)
            .field("retry", &self.retry)
            .finish()
    }
}

impl RegistrationBuilder {
    /// The lease's time to live: how long the key outlives this process's
    /// last keep-alive. Default 10 s; whole seconds, rounded up. etcd may
    /// raise a very short TTL to its minimum (about 1.5 election timeouts).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Connection options (TLS, credentials, timeouts); default
    /// [`default_connect_options`](super::default_connect_options).
    pub fn connect_options(mut self, options: ConnectOptions) -> Self {
        self.options = options;
        self
    }

    /// The delays between attempts after failures of the background task;
    /// default equal jitter from 100 ms to 5 s.
    pub fn retry_backoff(mut self, backoff: Backoff) -> Self {
        self.retry = backoff;
        self
    }

    /// Seeds the backoff jitter, for deterministic tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Registers: grants the lease, writes the endpoint under
    /// `<prefix><id>`, and starts keeping the lease alive in a task on the
    /// current tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] (no endpoints, empty prefix, zero TTL), or a
    /// [`Backend`] error if etcd cannot be reached or refuses; nothing is
    /// left behind in that case but, at worst, a lease that expires.
    pub async fn register(self) -> Result<Registration, BoxError> {
        if self.endpoints.is_empty() {
            return Err(ConfigError::new(COMPONENT, "endpoints", "must not be empty").into());
        }
        if self.prefix.is_empty() {
            return Err(ConfigError::new(COMPONENT, "prefix", "must not be empty").into());
        }
        config::non_zero(COMPONENT, "ttl", self.ttl)?;
        let key = format!("{}{}", self.prefix, self.endpoint.id);
        let backend =
            |e: etcd_client::Error| -> BoxError { Backend::new("etcd", key.clone(), e).into() };
        let mut client = Client::connect(&self.endpoints, Some(self.options.clone()))
            .await
            .map_err(backend)?;
        let ttl_secs = i64::try_from(self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0))
            .unwrap_or(i64::MAX);
        let value = super::encode(&self.endpoint);
        let (lease, granted) = put_under_lease(&mut client, &key, &value, ttl_secs)
            .await
            .map_err(backend)?;
        tracing::info!(target: TARGET, %key, lease, ttl = granted, "registered in etcd");
        let shared = Arc::new(Shared {
            lease: AtomicI64::new(lease),
            registered: AtomicBool::new(true),
        });
        let retries = match self.seed {
            Some(seed) => self.retry.sequence_seeded(seed),
            None => self.retry.sequence(),
        };
        let keeper = Keeper {
            endpoints: self.endpoints.clone(),
            options: self.options.clone(),
            key: key.clone(),
            value,
            ttl_secs,
            interval: keep_alive_interval(granted),
            retries,
            shared: shared.clone(),
        };
        let task = tokio::spawn(keeper.run(client.clone(), lease));
        Ok(Registration {
            key,
            endpoints: self.endpoints,
            options: self.options,
            client,
            shared,
            task,
        })
    }
}

fn keep_alive_interval(ttl_secs: i64) -> Duration {
    let ttl = Duration::from_secs(u64::try_from(ttl_secs.max(1)).unwrap_or(1));
    (ttl / 3).max(Duration::from_millis(100))
}

/// Grants a lease and writes the key under it: (lease id, granted TTL).
async fn put_under_lease(
    client: &mut Client,
    key: &str,
    value: &str,
    ttl_secs: i64,
) -> Result<(i64, i64), etcd_client::Error> {
    let grant = client.lease_grant(ttl_secs, None).await?;
    let lease = grant.id();
    client
        .put(key, value, Some(PutOptions::new().with_lease(lease)))
        .await?;
    Ok((lease, grant.ttl()))
}

/// This instance, registered in etcd under a lease kept alive in the
/// background; see the [module docs](super).
///
/// Dropping it stops the keep-alives without deregistering: the key goes
/// when the lease expires. Call [`deregister`](Self::deregister) on graceful
/// shutdown to remove it at once.
pub struct Registration {
    key: String,
    endpoints: Vec<String>,
    options: ConnectOptions,
    client: Client,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .field("lease", &self.lease_id())
            .field("registered", &self.is_registered())
            .finish()
    }
}

#[derive(Debug)]
struct Shared {
    lease: AtomicI64,
    registered: AtomicBool,
}

impl Registration {
    /// A builder registering `endpoint` under `<prefix><id>` on the etcd
    /// cluster at `endpoints`.
    pub fn builder<E: Into<String>>(
        endpoints: impl IntoIterator<Item = E>,
        prefix: impl Into<String>,
        endpoint: Endpoint,
    ) -> RegistrationBuilder {
        RegistrationBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: prefix.into(),
            endpoint,
            ttl: Duration::from_secs(10),
            options: super::default_connect_options(),
            retry: Backoff::equal_jitter(Duration::from_millis(100), Duration::from_secs(5))
                .expect("valid constant backoff"),
            seed: None,
        }
    }

    /// The key this instance is registered under.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The current lease.
    pub fn lease_id(&self) -> i64 {
        self.shared.lease.load(Ordering::Relaxed)
    }

    /// Whether the last keep-alive (or registration) succeeded.
    pub fn is_registered(&self) -> bool {
        self.shared.registered.load(Ordering::Relaxed)
    }

    /// Stops the keep-alives and revokes the lease, which deletes the key.
    ///
    /// # Errors
    ///
    /// A [`Backend`] error if etcd cannot be reached; the key then goes when
    /// the lease expires.
    pub async fn deregister(mut self) -> Result<(), BoxError> {
        self.task.abort();
        let lease = self.lease_id();
        let backend = |e: etcd_client::Error| -> BoxError {
            Backend::new("etcd", self.key.clone(), e).into()
        };
        if self.client.lease_revoke(lease).await.is_err() {
            // The connection may be stale after an outage: one fresh try.
            let mut fresh = Client::connect(&self.endpoints, Some(self.options.clone()))
                .await
                .map_err(backend)?;
            fresh.lease_revoke(lease).await.map_err(backend)?;
        }
        self.shared.registered.store(false, Ordering::Relaxed);
        tracing::info!(target: TARGET, key = %self.key, lease, "deregistered from etcd");
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Keeper {
    endpoints: Vec<String>,
    options: ConnectOptions,
    key: String,
    value: String,
    ttl_secs: i64,
    interval: Duration,
    retries: Sequence,
    shared: Arc<Shared>,
}

enum Ended {
    /// etcd says the lease no longer exists.
    Lost,
    /// The connection failed.
    Failed(BoxError),
}

impl Keeper {
    async fn run(mut self, client: Client, lease: i64) {
        let mut client = Some(client);
        let mut lease = Some(lease);
        loop {
            let c = match client.as_mut() {
                Some(c) => c,
                None => match Client::connect(&self.endpoints, Some(self.options.clone())).await {
                    Ok(c) => client.insert(c),
                    Err(e) => {
                        self.failed(e.into()).await;
                        continue;
                    }
                },
            };
            let id = match lease {
                Some(id) => id,
                None => match put_under_lease(c, &self.key, &self.value, self.ttl_secs).await {
                    Ok((id, granted)) => {
                        tracing::warn!(target: TARGET, key = %self.key, lease = id, "registered again in etcd under a new lease");
                        self.interval = keep_alive_interval(granted);
                        self.shared.lease.store(id, Ordering::Relaxed);
                        self.shared.registered.store(true, Ordering::Relaxed);
                        *lease.insert(id)
                    }
                    Err(e) => {
                        client = None;
                        self.failed(e.into()).await;
                        continue;
                    }
                },
            };
            match self.keep_alive(c, id).await {
                Ended::Lost => {
                    tracing::warn!(target: TARGET, key = %self.key, lease = id, "etcd lease lost; registering again");
                    self.shared.registered.store(false, Ordering::Relaxed);
                    lease = None;
                }
                Ended::Failed(e) => {
                    client = None;
                    self.failed(e).await;
                }
            }
        }
    }

    async fn failed(&mut self, error: BoxError) {
        self.shared.registered.store(false, Ordering::Relaxed);
        let wait = self.retries.next_delay();
        tracing::warn!(target: TARGET, key = %self.key, %error, retry_in = ?wait, "etcd keep-alive failed");
        tokio::time::sleep(wait).await;
    }

    async fn keep_alive(&mut self, client: &mut Client, lease: i64) -> Ended {
        let (mut keeper, mut responses) = match client.lease_keep_alive(lease).await {
            Ok(pair) => pair,
            // etcd-client answers a keep-alive of an expired lease with an
            // error; ask etcd whether the lease still exists.
            Err(e) => {
                return match client.lease_time_to_live(lease, None).await {
                    Ok(ttl) if ttl.ttl() <= 0 => Ended::Lost,
                    _ => Ended::Failed(e.into()),
                }
            }
        };
        loop {
            if let Err(e) = keeper.keep_alive().await {
                return Ended::Failed(e.into());
            }
            let answer = tokio::time::timeout(
                self.interval.max(Duration::from_secs(1)),
                responses.message(),
            )
            .await;
            match answer {
                Err(_) => return Ended::Failed("no keep-alive answer in time".into()),
                Ok(Err(e)) => return Ended::Failed(e.into()),
                Ok(Ok(None)) => return Ended::Failed("keep-alive stream closed".into()),
                Ok(Ok(Some(resp))) if resp.ttl() <= 0 => return Ended::Lost,
                Ok(Ok(Some(_))) => {
                    self.shared.registered.store(true, Ordering::Relaxed);
                    self.retries.reset();
                }
            }
            tokio::time::sleep(self.interval).await;
        }
    }
}
