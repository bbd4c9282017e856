use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use futures_core::Stream;
use futures_util::TryStreamExt;
use tower_layer::Layer;
use tower_service::Service;
use watertight_core::{BoxError, Change, Classify, Endpoint, ErrorsAsFailures};

use crate::config::Config;
use crate::event::Listener;
use crate::hints::{NoHints, ServerHints};
use crate::service::Balancer;

/// Builds a [`Balancer`] over each discovery stream it wraps, with one
/// configuration and one `new_endpoint` function. Made by
/// [`Builder::layer`](crate::Builder::layer).
///
/// The stream is the "inner service" here, as with tower's
/// `MakeBalanceLayer`: `layer.layer(source)` is a balancer over `source`.
/// Zone-aware routing needs [`Builder::build`](crate::Builder::build), since
/// its local-cluster stream can feed only one balancer.
///
/// # Clone
///
/// Configuration only: clones share the configuration and clone the
/// `new_endpoint` function, classifier and hints; each balancer they build
/// has its own state.
pub struct BalancerLayer<N, Req, C = ErrorsAsFailures, H = NoHints> {
    config: Arc<Config>,
    new_endpoint: N,
    classify: C,
    hints: H,
    listener: Option<Listener>,
    _req: PhantomData<fn(Req)>,
}

impl<N, Req, C, H> BalancerLayer<N, Req, C, H> {
    pub(crate) fn from_parts(
        config: Config,
        new_endpoint: N,
        classify: C,
        hints: H,
        listener: Option<Listener>,
    ) -> Self {
        BalancerLayer {
            config: Arc::new(config),
            new_endpoint,
            classify,
            hints,
            listener,
            _req: PhantomData,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl<N: Clone, Req, C: Clone, H: Clone> Clone for BalancerLayer<N, Req, C, H> {
    fn clone(&self) -> Self {
        BalancerLayer {
            config: self.config.clone(),
            new_endpoint: self.new_endpoint.clone(),
            classify: self.classify.clone(),
            hints: self.hints.clone(),
            listener: self.listener.clone(),
            _req: PhantomData,
        }
    }
}

impl<N, Req, C: fmt::Debug, H: fmt::Debug> fmt::Debug for BalancerLayer<N, Req, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancerLayer")
            .field("config", &self.config)
            .field("classify", &self.classify)
            .field("hints", &self.hints)
            .field("on_event", &self.listener.is_some())
            .finish_non_exhaustive()
    }
}

impl<D, E, N, Req, C, H, S> Layer<D> for BalancerLayer<N, Req, C, H>
where
    D: Stream<Item = Result<Change, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
    N: Fn(&Endpoint) -> S + Clone + Send + 'static,
    S: Service<Req>,
    S::Response: 'static,
    S::Error: 'static,
    C: Classify<S::Response, S::Error> + Clone + Send + Sync + 'static,
    H: ServerHints<S::Response> + Clone + Send + Sync + 'static,
{
    type Service = Balancer<S, Req>;

    fn layer(&self, discover: D) -> Balancer<S, Req> {
        Balancer::from_parts(
            (*self.config).clone(),
            Box::pin(discover.map_err(Into::into)),
            None,
            Box::new(self.new_endpoint.clone()),
            self.classify.clone(),
            self.hints.clone(),
            self.listener.clone(),
        )
    }
}
