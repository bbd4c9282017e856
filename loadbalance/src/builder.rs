use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use futures_util::TryStreamExt;
use tower_service::Service;
use watertight_core::{BoxError, Change, Classify, Endpoint, ErrorsAsFailures, Locality};

use crate::config::{
    err, Config, Load, LocalityPolicy, Maglev, PeakEwma, Pick, RingHash, SlowStart, Subsets,
    ZoneAware,
};
use crate::error::ConfigError;
use crate::event::{Event, Listener};
use crate::hints::{NoHints, ServerHints};
use crate::layer::BalancerLayer;
use crate::outlier::OutlierDetection;
use crate::service::{Balancer, ChangeStream};

/// Builds a [`Balancer`]: configuration, classification, server hints, an
/// event listener and the local cluster, validated at
/// [`build`](Self::build).
///
/// ```
/// use std::convert::Infallible;
/// use watertight_core::{Change, Endpoint, Locality};
/// use watertight_loadbalance::{Balancer, Builder, LocalityPolicy, ZoneAware};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), watertight_core::BoxError> {
/// let upstream = futures_util::stream::iter([Ok::<_, Infallible>(Change::Reset(vec![
///     Endpoint::new("10.0.1.1:80".parse()?).with_locality(Locality::zone("a")),
/// ]))]);
/// let clients = futures_util::stream::iter([Ok::<_, Infallible>(Change::Reset(vec![
///     Endpoint::new("10.0.9.1:80".parse()?).with_locality(Locality::zone("a")),
///     Endpoint::new("10.0.9.2:80".parse()?).with_locality(Locality::zone("b")),
/// ]))]);
/// let balancer: Balancer<_, ()> = Builder::new()
///     .name("api")
///     .local_zone("a")
///     .locality(LocalityPolicy::ZoneAware(ZoneAware::default()))
///     .local_cluster(clients)
///     .seed(7)
///     .build(upstream, |_: &Endpoint| {
///         tower::service_fn(|()| async { Ok::<_, Infallible>("pong") })
///     })?;
/// # let _ = balancer; Ok(()) }
/// ```
pub struct Builder<C = ErrorsAsFailures, H = NoHints> {
    config: Config,
    classify: C,
    hints: H,
    listener: Option<Listener>,
    local_cluster: Option<ChangeStream>,
}

impl<C: fmt::Debug, H: fmt::Debug> fmt::Debug for Builder<C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("classify", &self.classify)
            .field("hints", &self.hints)
            .field("on_event", &self.listener.is_some())
            .field("local_cluster", &self.local_cluster.is_some())
            .finish()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// A builder with the defaults of [`Config`], classifying with
    /// [`ErrorsAsFailures`] and reading no server hints.
    pub fn new() -> Self {
        Builder {
            config: Config::default(),
            classify: ErrorsAsFailures,
            hints: NoHints,
            listener: None,
            local_cluster: None,
        }
    }
}

impl<C, H> Builder<C, H> {
    /// Replaces the whole configuration (read with serde, say).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets `name`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Sets `local_locality`: where this client runs.
    pub fn local_locality(mut self, locality: Locality) -> Self {
        self.config.local_locality = Some(locality);
        self
    }

    /// Sets `local_locality` to a zone (region unknown).
    pub fn local_zone(self, zone: impl Into<String>) -> Self {
        self.local_locality(Locality::zone(zone))
    }

    /// Sets `overprovisioning_factor`.
    pub fn overprovisioning_factor(mut self, factor: f64) -> Self {
        self.config.overprovisioning_factor = factor;
        self
    }

    /// Sets `healthy_panic_threshold` (percent; 0 disables panic).
    pub fn healthy_panic_threshold(mut self, percent: f64) -> Self {
        self.config.healthy_panic_threshold = percent;
        self
    }

    /// Sets `fail_traffic_on_panic`.
    pub fn fail_traffic_on_panic(mut self, fail: bool) -> Self {
        self.config.fail_traffic_on_panic = fail;
        self
    }

    /// Sets the locality policy.
    pub fn locality(mut self, policy: LocalityPolicy) -> Self {
        self.config.locality = policy;
        self
    }

    /// Zone-aware routing with these parameters; needs a
    /// [`local_cluster`](Self::local_cluster) and a local zone.
    pub fn zone_aware(self, zone_aware: ZoneAware) -> Self {
        self.locality(LocalityPolicy::ZoneAware(zone_aware))
    }

    /// Sets the label subsets.
    pub fn subsets(mut self, subsets: Subsets) -> Self {
        self.config.subsets = Some(subsets);
        self
    }

    /// Sets the endpoint pick.
    pub fn pick(mut self, pick: Pick) -> Self {
        self.config.pick = pick;
        self
    }

    /// P2C over requests in flight.
    pub fn least_requests(self) -> Self {
        self.pick(Pick::P2c {
            load: Load::LeastRequests,
        })
    }

    /// (Weighted) round robin.
    pub fn round_robin(self) -> Self {
        self.pick(Pick::RoundRobin)
    }

    /// Ring hash with its defaults; set the key with
    /// [`Balancer::with_hash_key`].
    pub fn ring_hash(self) -> Self {
        self.pick(Pick::RingHash(RingHash::default()))
    }

    /// Maglev with its defaults; set the key with
    /// [`Balancer::with_hash_key`].
    pub fn maglev(self) -> Self {
        self.pick(Pick::Maglev(Maglev::default()))
    }

    /// Sets PeakEWMA's parameters.
    pub fn peak_ewma(mut self, peak_ewma: PeakEwma) -> Self {
        self.config.peak_ewma = peak_ewma;
        self
    }

    /// Sets PeakEWMA's default RTT.
    pub fn default_rtt(mut self, rtt: Duration) -> Self {
        self.config.peak_ewma.default_rtt = rtt;
        self
    }

    /// Sets `active_request_bias`.
    pub fn active_request_bias(mut self, bias: f64) -> Self {
        self.config.active_request_bias = bias;
        self
    }

    /// Ramps new endpoints up.
    pub fn slow_start(mut self, slow_start: SlowStart) -> Self {
        self.config.slow_start = Some(slow_start);
        self
    }

    /// Sets outlier detection's parameters.
    pub fn outlier_detection(mut self, outlier_detection: OutlierDetection) -> Self {
        self.config.outlier_detection = Some(outlier_detection);
        self
    }

    /// Turns outlier detection off.
    pub fn no_outlier_detection(mut self) -> Self {
        self.config.outlier_detection = None;
        self
    }

    /// Seeds every random choice.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// Classifies responses for outlier detection and PeakEWMA's failure
    /// penalty (default [`ErrorsAsFailures`]; for HTTP,
    /// `ServerErrorsAsFailures` of `watertight-core`).
    pub fn classify<C2>(self, classify: C2) -> Builder<C2, H> {
        Builder {
            config: self.config,
            classify,
            hints: self.hints,
            listener: self.listener,
            local_cluster: self.local_cluster,
        }
    }

    /// Reads server hints from responses (default [`NoHints`]; for HTTP,
    /// [`HeaderHints`](crate::http::HeaderHints)).
    pub fn hints<H2>(self, hints: H2) -> Builder<C, H2> {
        Builder {
            config: self.config,
            classify: self.classify,
            hints,
            listener: self.listener,
            local_cluster: self.local_cluster,
        }
    }

    /// Calls `listener` with every [`Event`].
    pub fn on_event(mut self, listener: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// The membership of this client's own cluster (the clients of the
    /// upstream), for zone-aware routing: typically a discovery source
    /// watching where this service registers itself. Only localities and
    /// health are read.
    pub fn local_cluster<L, E>(mut self, local_cluster: L) -> Self
    where
        L: Stream<Item = Result<Change, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.local_cluster = Some(Box::pin(local_cluster.map_err(Into::into)));
        self
    }

    /// Builds the balancer over the endpoints `discover` yields, building
    /// each endpoint's service with `new_endpoint`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field (see
    /// [`Config::validate`]), or `local_cluster` when zone-aware routing is
    /// asked for without one.
    pub fn build<D, E, N, S, Req>(
        self,
        discover: D,
        new_endpoint: N,
    ) -> Result<Balancer<S, Req>, ConfigError>
    where
        D: Stream<Item = Result<Change, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
        N: Fn(&Endpoint) -> S + Send + 'static,
        S: Service<Req>,
        S::Response: 'static,
        S::Error: 'static,
        C: Classify<S::Response, S::Error> + Send + Sync + 'static,
        H: ServerHints<S::Response> + Send + Sync + 'static,
    {
        self.config.validate()?;
        if matches!(self.config.locality, LocalityPolicy::ZoneAware(_))
            && self.local_cluster.is_none()
        {
            return Err(err("local_cluster", "must be given for zone-aware routing"));
        }
        Ok(Balancer::from_parts(
            self.config,
            Box::pin(discover.map_err(Into::into)),
            self.local_cluster,
            Box::new(new_endpoint),
            self.classify,
            self.hints,
            self.listener,
        ))
    }

    /// A [`BalancerLayer`] that builds balancers of this configuration over
    /// the discovery streams it wraps.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field, or `local_cluster`
    /// when one was given or zone-aware routing is asked for: a layer builds
    /// many balancers and a stream feeds only one.
    pub fn layer<N, Req>(
        self,
        new_endpoint: N,
    ) -> Result<BalancerLayer<N, Req, C, H>, ConfigError> {
        self.config.validate()?;
        if self.local_cluster.is_some()
            || matches!(self.config.locality, LocalityPolicy::ZoneAware(_))
        {
            return Err(err(
                "local_cluster",
                "cannot be shared by the balancers of a layer; use Builder::build",
            ));
        }
        Ok(BalancerLayer::from_parts(
            self.config,
            new_endpoint,
            self.classify,
            self.hints,
            self.listener,
        ))
    }
}
