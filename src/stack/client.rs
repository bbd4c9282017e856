//! [`client`], [`ClientBuilder`] and the [`Client`] they build.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use http::{Request, Response};
use tower::buffer::Buffer;
use tower::timeout::Timeout;
use tower::util::{BoxCloneSyncService, Either};
use tower::{Layer, Service};
use watertight_bulkhead::{
    AdaptiveConcurrencyLayer, AdaptiveHandle, AdmissionHandle, AdmissionLayer, AlgorithmConfig,
    BulkheadLayer, Mode as BulkheadMode,
};
use watertight_chaos::ChaosController;
use watertight_circuit_breaker::{BreakerGroup, CircuitBreakerLayer, Mode};
use watertight_core::classify::ServerErrorsAsFailures;
use watertight_core::{BoxError, Change, Endpoint};
use watertight_loadbalance::http::HeaderHints;
use watertight_loadbalance::BalancerHandle;
use watertight_retry::policy::{ByClone, HeaderHints as RetryHints, SafeRequests};
use watertight_retry::{RetryHandle, RetryLayer, StandardPolicy};

use super::classify::{LimitClassify, RefusalClassify};
use super::config::{ClientConfig, ConfigError, COMPONENT};

/// The retry policy of the stack: HTTP classification, idempotent methods,
/// server hints from headers, requests copied with `Clone`.
type Policy = StandardPolicy<ServerErrorsAsFailures, SafeRequests, RetryHints, ByClone>;

/// Builds the [recommended client stack](super) over the endpoints
/// `discover` yields, building each endpoint's service with
/// `new_endpoint`; [`ClientBuilder`] adds a local cluster (zone-aware
/// routing) and a shared chaos controller.
///
/// Call it inside a tokio runtime: the balancer runs on a task of its own
/// (behind a `tower::buffer::Buffer`), so the client's clones share it.
///
/// # Errors
///
/// A [`ConfigError`] naming the first invalid field of `config`.
///
/// # Panics
///
/// Outside a tokio runtime (spawning the balancer's task).
pub fn client<D, E, N, S, ReqBody, ResBody>(
    config: ClientConfig,
    discover: D,
    new_endpoint: N,
) -> Result<Client<ReqBody, ResBody>, ConfigError>
where
    D: Stream<Item = Result<Change, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
    N: Fn(&Endpoint) -> S + Send + 'static,
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ReqBody: Clone + Send + Sync + 'static,
    ResBody: Send + 'static,
{
    ClientBuilder::new(config).build(discover, new_endpoint)
}

type LocalCluster = Pin<Box<dyn Stream<Item = Result<Change, BoxError>> + Send>>;

/// Builds the [recommended client stack](super) with what a
/// [`ClientConfig`] cannot hold: the client's own cluster (for Envoy's
/// zone-aware routing) and a chaos controller shared with other clients.
///
/// ```
/// # use std::convert::Infallible;
/// # use http::{Request, Response};
/// use watertight::core::{Endpoint, Locality};
/// use watertight::discovery::Static;
/// use watertight::stack::{ClientBuilder, ClientConfig};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), watertight::core::BoxError> {
/// let at = |ip: &str, zone: &str| Endpoint::new(format!("{ip}:80").parse().unwrap()).with_locality(Locality::zone(zone));
/// let upstream = vec![at("10.0.1.1", "a"), at("10.0.2.1", "b"), at("10.0.3.1", "c")];
/// // Where the clients run: discovered like the upstream (each registers itself).
/// let clients = vec![at("10.1.1.1", "a"), at("10.1.2.1", "b"), at("10.1.3.1", "c")];
/// let client = ClientBuilder::new(ClientConfig::default().locality(Locality::zone("a")))
///     .local_cluster(Static::new(clients))
///     .build(Static::new(upstream), |_: &Endpoint| {
///         tower::service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) })
///     })?;
/// # let _ = client; Ok(()) }
/// ```
pub struct ClientBuilder {
    config: ClientConfig,
    local_cluster: Option<LocalCluster>,
    chaos: Option<ChaosController>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("config", &self.config)
            .field("local_cluster", &self.local_cluster.is_some())
            .field("chaos", &self.chaos)
            .finish()
    }
}

impl ClientBuilder {
    /// A builder for a client configured by `config`.
    pub fn new(config: ClientConfig) -> Self {
        ClientBuilder {
            config,
            local_cluster: None,
            chaos: None,
        }
    }

    /// The membership of this client's own cluster (its service's
    /// instances, with their localities), for zone-aware routing: typically
    /// a discovery source watching where the service registers itself.
    /// Needs `balancer.local_locality` ([`ClientConfig::locality`]).
    pub fn local_cluster<L, E>(mut self, local_cluster: L) -> Self
    where
        L: Stream<Item = Result<Change, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.local_cluster = Some(Box::pin(MapErr(Box::pin(local_cluster))));
        self
    }

    /// Injects faults from `controller` (shared with other clients, or
    /// driven by an admin API) instead of a controller of this client's own.
    pub fn chaos(mut self, controller: ChaosController) -> Self {
        self.chaos = Some(controller);
        self
    }

    /// Builds the client; see [`client`].
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field of the
    /// configuration, or `local_cluster` when one was given without
    /// `balancer.local_locality`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (spawning the balancer's task).
    pub fn build<D, E, N, S, ReqBody, ResBody>(
        self,
        discover: D,
        new_endpoint: N,
    ) -> Result<Client<ReqBody, ResBody>, ConfigError>
    where
        D: Stream<Item = Result<Change, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
        N: Fn(&Endpoint) -> S + Send + 'static,
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        ReqBody: Clone + Send + Sync + 'static,
        ResBody: Send + 'static,
    {
        let config = self.config;
        config.validate()?;
        if self.local_cluster.is_some() && config.balancer.local_locality.is_none() {
            return Err(ConfigError::new(
                COMPONENT,
                "local_cluster",
                "needs `balancer.local_locality`: where this client runs",
            ));
        }
        let name = config.name.clone();
        let seed = config.seed;
        let sub_seed = |n: u64| seed.map(|s| s.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(n));
        let named = |own: &str, default: &str, suffix: &str| {
            if own == default {
                format!("{name}{suffix}")
            } else {
                own.to_owned()
            }
        };

        // Per endpoint: breaker → per-try timeout → chaos.
        let chaos = match self.chaos {
            Some(c) => c,
            None => {
                let mut b = ChaosController::builder().name(name.clone());
                if let Some(s) = sub_seed(1) {
                    b = b.seed(s);
                }
                b.build().map_err(|e| e.within(COMPONENT, "chaos"))?
            }
        };
        let chaos_layer = chaos.layer().classify(ServerErrorsAsFailures);
        let per_try = config.per_try_timeout;
        let breaker = config.breaker.clone().map(|mut b| {
            if b.slow_call_duration.is_none() {
                b.slow_call_duration = Some(per_try.mul_f64(config.breaker_slow_call_share));
            }
            b
        });
        if let Some(b) = &breaker {
            b.validate().map_err(|e| e.within(COMPONENT, "breaker"))?;
        }
        let breaker_group = BreakerGroup::new(config.breaker_max_open_percent).map_err(|e| {
            ConfigError::new(COMPONENT, "breaker_max_open_percent", e.reason().to_owned())
        })?;
        let breaker_group_handle = breaker_group.clone();
        let breaker_seed = sub_seed(2);
        let breaker_name = breaker
            .as_ref()
            .map(|b| named(&b.name, "circuit_breaker", ""))
            .unwrap_or_default();
        let endpoint_limit = match &config.endpoint_limit {
            Some(c) => {
                let mut c = c.clone();
                c.name = named(&c.name, "bulkhead", "/endpoint");
                c.mode = BulkheadMode::Backpressure;
                Some(
                    BulkheadLayer::builder()
                        .config(c)
                        .build()
                        .map_err(|e| e.within(COMPONENT, "endpoint_limit"))?,
                )
            }
            None => None,
        };
        let endpoint = move |e: &Endpoint| {
            let svc = Timeout::new(chaos_layer.layer(new_endpoint(e)), per_try);
            let svc = match &endpoint_limit {
                Some(l) => Either::Left(l.layer(svc)),
                None => Either::Right(svc),
            };
            match &breaker {
                Some(cfg) => {
                    let mut b = CircuitBreakerLayer::builder()
                        .config(cfg.clone())
                        .name(format!("{breaker_name}/{}", e.id))
                        .mode(Mode::Backpressure)
                        .group(breaker_group.clone())
                        .classify(ServerErrorsAsFailures);
                    if let Some(s) = breaker_seed {
                        b = b.seed(s ^ hash(e.id.as_str()));
                    }
                    // Validated with the rest of the configuration.
                    let layer = b.build().expect("breaker configuration validated");
                    Either::Left(layer.layer(svc))
                }
                None => Either::Right(svc),
            }
        };

        // The balancer, shared through a buffer.
        let mut balancer_config = config.balancer.clone();
        balancer_config.name = named(&balancer_config.name, "loadbalance", "");
        if balancer_config.seed.is_none() {
            balancer_config.seed = sub_seed(3);
        }
        let mut lb = watertight_loadbalance::Builder::new()
            .config(balancer_config)
            .classify(ServerErrorsAsFailures)
            .hints(HeaderHints);
        if let Some(local) = self.local_cluster {
            lb = lb.local_cluster(local);
        }
        let balancer = lb
            .build(discover, endpoint)
            .map_err(|e| e.within(COMPONENT, "balancer"))?;
        let balancer_handle = balancer.handle();
        let buffered = Buffer::new(balancer, config.buffer);

        // Deadline and retries.
        let mut retry_config = config.retry.clone();
        retry_config.name = named(&retry_config.name, "retry", "");
        if retry_config.seed.is_none() {
            retry_config.seed = sub_seed(4);
        }
        let retry: RetryLayer<_, Policy> = RetryLayer::builder()
            .config(retry_config)
            .classify(ServerErrorsAsFailures)
            .build()
            .map_err(|e| e.within(COMPONENT, "retry"))?;
        let retry_handle = retry.handle();
        let inner = retry.layer(buffered);

        // Admission, then the concurrency limit around it.
        let (inner, admission_handle) = match &config.admission {
            Some(a) => {
                let mut a = a.clone();
                a.name = named(&a.name, "admission", "");
                if a.seed.is_none() {
                    a.seed = sub_seed(5);
                }
                let layer = AdmissionLayer::builder()
                    .config(a)
                    .classify(RefusalClassify)
                    .build()
                    .map_err(|e| e.within(COMPONENT, "admission"))?;
                let svc = layer.layer(inner);
                let handle = svc.handle();
                (Either::Left(svc), Some(handle))
            }
            None => (Either::Right(inner), None),
        };
        let (inner, concurrency_handle) = match &config.concurrency {
            Some(c) => {
                let mut c = c.clone();
                c.name = named(&c.name, "adaptive_concurrency", "");
                seed_algorithm(&mut c.algorithm, sub_seed(6));
                let layer = AdaptiveConcurrencyLayer::builder()
                    .config(c)
                    .classify(LimitClassify)
                    .build()
                    .map_err(|e| e.within(COMPONENT, "concurrency"))?;
                let svc = layer.layer(inner);
                let handle = svc.handle();
                (Either::Left(svc), Some(handle))
            }
            None => (Either::Right(inner), None),
        };

        Ok(Client {
            inner: BoxCloneSyncService::new(inner),
            handles: Handles {
                concurrency: concurrency_handle,
                admission: admission_handle,
                retry: retry_handle,
                balancer: balancer_handle,
                breakers: config.breaker.is_some().then_some(breaker_group_handle),
                chaos,
            },
        })
    }
}

/// Seeds the algorithms that draw random numbers.
fn seed_algorithm(algorithm: &mut AlgorithmConfig, seed: Option<u64>) {
    let Some(seed) = seed else { return };
    match algorithm {
        AlgorithmConfig::Vegas(v) if v.seed.is_none() => v.seed = Some(seed),
        AlgorithmConfig::Envoy(e) if e.seed.is_none() => e.seed = Some(seed),
        _ => {}
    }
}

/// FNV-1a, to give each endpoint's breaker its own seed.
fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A stream with its errors boxed.
struct MapErr<L>(L);

impl<L, E> Stream for MapErr<L>
where
    L: Stream<Item = Result<Change, E>> + Unpin,
    E: Into<BoxError>,
{
    type Item = Result<Change, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|item| item.map(|r| r.map_err(Into::into)))
    }
}

/// The handles of a [`Client`]'s layers, to observe and control them at
/// run time.
///
/// # Clone
///
/// Cheap: every handle shares its layer's state.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Handles {
    /// The concurrency limit (current limit, in flight), if configured.
    pub concurrency: Option<AdaptiveHandle>,
    /// Admission (rejection probability), if configured.
    pub admission: Option<AdmissionHandle>,
    /// The retry layer (counters, the incident switch).
    pub retry: RetryHandle,
    /// The balancer (endpoints, zone routing, outlier ejections).
    pub balancer: BalancerHandle,
    /// The group of the per-endpoint breakers (how many are open, trips
    /// refused), if configured.
    pub breakers: Option<BreakerGroup>,
    /// The fault-injection controller of the endpoints' chaos layers.
    pub chaos: ChaosController,
}

/// The [recommended client stack](super): a [`Service`] over
/// `http::Request<ReqBody>` built by [`client`] or [`ClientBuilder`].
///
/// Its errors are boxed: the endpoint's own, and the layers' (a concurrency
/// limit's `Full`, admission's `Throttled`, the retry layer's
/// `DeadlineExceeded`, the balancer's `NoHealthyEndpoints`, a per-try
/// `Elapsed`); match them with
/// [`is_caused_by`](crate::core::is_caused_by).
///
/// # Clone
///
/// Clones share everything: the limit, the budget, the balancer.
pub struct Client<ReqBody, ResBody> {
    inner: BoxCloneSyncService<Request<ReqBody>, Response<ResBody>, BoxError>,
    handles: Handles,
}

impl<ReqBody, ResBody> Client<ReqBody, ResBody> {
    /// The handles of the client's layers.
    pub fn handles(&self) -> &Handles {
        &self.handles
    }
}

impl<ReqBody, ResBody> Clone for Client<ReqBody, ResBody> {
    fn clone(&self) -> Self {
        Client {
            inner: self.inner.clone(),
            handles: self.handles.clone(),
        }
    }
}

impl<ReqBody, ResBody> fmt::Debug for Client<ReqBody, ResBody> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("handles", &self.handles)
            .finish_non_exhaustive()
    }
}

impl<ReqBody, ResBody> Service<Request<ReqBody>> for Client<ReqBody, ResBody> {
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = <BoxCloneSyncService<Request<ReqBody>, Response<ResBody>, BoxError> as Service<
        Request<ReqBody>,
    >>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        self.inner.call(req)
    }
}
