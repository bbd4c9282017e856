//! Stacks for the scenarios: [`Unprotected`] (the `none` stack) and, with
//! feature `watertight`, `Watertight` (the recommended stack). The peer
//! stacks (tower's, tower-resilience's) live with the comparison in
//! `watertight-benches`, so a user of this crate pulls in no peer crate.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::timeout::Timeout;
use tower::util::BoxCloneService;
use tower::{Service, ServiceExt};
use watertight_core::BoxError;

use crate::backend::SimBackend;
use crate::scenario::{ClientContext, Stack};

/// The `none` stack: round robin over every backend, the per-try timeout,
/// no retries, no breakers — what a client without resilience does.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unprotected;

impl Stack for Unprotected {
    type Service = BoxCloneService<Request<()>, Response<()>, BoxError>;
    type Error = BoxError;
    type Future = <Self::Service as Service<Request<()>>>::Future;

    fn name(&self) -> String {
        "none".to_owned()
    }

    fn client(&self, ctx: &ClientContext) -> Self::Service {
        let rr = RoundRobin {
            backends: ctx.backends.clone().into(),
            next: Arc::default(),
        };
        Timeout::new(rr, ctx.per_try_timeout).boxed_clone()
    }
}

/// Round robin over a fixed set of backends; clones share the position.
#[derive(Clone, Debug)]
struct RoundRobin {
    backends: Arc<[SimBackend]>,
    next: Arc<AtomicUsize>,
}

impl Service<Request<()>> for RoundRobin {
    type Response = Response<()>;
    type Error = BoxError;
    type Future = futures_util::future::MapErr<
        <SimBackend as Service<Request<()>>>::Future,
        fn(crate::backend::ConnectionLost) -> BoxError,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        use futures_util::TryFutureExt;
        let i = self.next.fetch_add(1, Relaxed) % self.backends.len();
        let mut backend = self.backends[i].clone();
        backend.call(req).map_err(Into::into as fn(_) -> BoxError)
    }
}

#[cfg(feature = "watertight")]
pub use self::watertight_stack::Watertight;

#[cfg(feature = "watertight")]
mod watertight_stack {
    use std::collections::HashMap;
    use std::convert::Infallible;

    use http::Request;
    use tower::Service;
    use watertight::stack::{Client, ClientBuilder, ClientConfig, ConfigError};
    use watertight_core::{Change, Endpoint};

    use crate::scenario::{ClientContext, Stack};

    /// The `watertight` stack: the facade's recommended client stack
    /// ([`watertight::stack`]) built from a [`ClientConfig`], the stack's
    /// defaults unless given another.
    ///
    /// Each client gets the configuration with what the scenario fixes for
    /// every stack (the per-try timeout, the maximum attempts, the seed) and
    /// what a deployment knows about itself (its name, its locality, the
    /// local cluster for zone-aware routing); nothing else is changed.
    #[cfg_attr(docsrs, doc(cfg(feature = "watertight")))]
    #[derive(Clone, Debug, Default)]
    pub struct Watertight {
        config: ClientConfig,
    }

    impl Watertight {
        /// The stack built from `config` instead of the defaults.
        ///
        /// # Errors
        ///
        /// A [`ConfigError`] naming the first invalid field of `config`.
        pub fn new(config: ClientConfig) -> Result<Self, ConfigError> {
            config.validate()?;
            Ok(Watertight { config })
        }

        /// The configuration each client starts from.
        pub fn config(&self) -> &ClientConfig {
            &self.config
        }
    }

    impl Stack for Watertight {
        type Service = Client<(), ()>;
        type Error = watertight_core::BoxError;
        type Future = <Client<(), ()> as Service<Request<()>>>::Future;

        fn name(&self) -> String {
            "watertight".to_owned()
        }

        fn client(&self, ctx: &ClientContext) -> Self::Service {
            let config = self
                .config
                .clone()
                .name(format!("client-{}", ctx.zone))
                .locality(ctx.locality.clone())
                .per_try_timeout(ctx.per_try_timeout)
                .max_attempts(ctx.max_attempts)
                .seed(ctx.seed);
            let backends: HashMap<_, _> = ctx
                .backends
                .iter()
                .map(|b| (b.endpoint().id.clone(), b.clone()))
                .collect();
            let endpoints: Vec<Endpoint> =
                ctx.backends.iter().map(|b| b.endpoint().clone()).collect();
            let once = |list: Vec<Endpoint>| {
                futures_util::stream::iter([Ok::<_, Infallible>(Change::Reset(list))])
            };
            ClientBuilder::new(config)
                .local_cluster(once(ctx.local_cluster.clone()))
                .build(once(endpoints), move |e: &Endpoint| backends[&e.id].clone())
                // The configuration was validated by `new`, and the locality
                // the local cluster needs is set above.
                .expect("a validated configuration builds")
        }
    }
}
