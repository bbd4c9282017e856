use std::fmt;

use tower_layer::Layer;
use watertight_core::ErrorsAsFailures;

use crate::controller::ChaosController;
use crate::service::Chaos;

/// Wraps services in [`Chaos`], injecting the faults of one
/// [`ChaosController`].
///
/// # Clone
///
/// The layer holds the controller's handle: every service it wraps (and
/// every clone) injects the same controller's experiments and counts
/// against the same `max_active_faults`. Each wrapped service draws its
/// own random numbers.
#[derive(Clone)]
pub struct ChaosLayer<C = ErrorsAsFailures> {
    controller: ChaosController,
    classify: C,
}

impl<C: fmt::Debug> fmt::Debug for ChaosLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosLayer")
            .field("controller", &self.controller.name())
            .field("classify", &self.classify)
            .finish()
    }
}

impl ChaosLayer {
    /// A layer for `controller`, judging results (for steady-state guards)
    /// with [`ErrorsAsFailures`].
    pub fn new(controller: ChaosController) -> Self {
        ChaosLayer {
            controller,
            classify: ErrorsAsFailures,
        }
    }
}

impl<C> ChaosLayer<C> {
    /// Judges results with `classify` for the steady-state guards of
    /// [`AbortWhen`](crate::AbortWhen). It sees results as callers do:
    /// injected errors are `Err` results.
    pub fn classify<C2>(self, classify: C2) -> ChaosLayer<C2> {
        ChaosLayer {
            controller: self.controller,
            classify,
        }
    }

    /// The controller.
    pub fn controller(&self) -> &ChaosController {
        &self.controller
    }
}

impl<S, C: Clone> Layer<S> for ChaosLayer<C> {
    type Service = Chaos<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Chaos::from_parts(inner, self.controller.shared.clone(), self.classify.clone())
    }
}

#[cfg(feature = "http")]
pub use self::http_layer::HttpChaosLayer;

#[cfg(feature = "http")]
mod http_layer {
    use std::fmt;

    use tower_layer::Layer;
    use watertight_core::classify::ServerErrorsAsFailures;

    use crate::controller::ChaosController;
    use crate::service::HttpChaos;

    /// Wraps `http` services in [`HttpChaos`], injecting the faults of one
    /// [`ChaosController`].
    ///
    /// # Clone
    ///
    /// As [`ChaosLayer`](crate::ChaosLayer): clones and wrapped services
    /// share the controller.
    #[derive(Clone)]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub struct HttpChaosLayer<C = ServerErrorsAsFailures> {
        controller: ChaosController,
        classify: C,
    }

    impl<C: fmt::Debug> fmt::Debug for HttpChaosLayer<C> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("HttpChaosLayer")
                .field("controller", &self.controller.name())
                .field("classify", &self.classify)
                .finish()
        }
    }

    impl HttpChaosLayer {
        /// A layer for `controller`, judging results (for steady-state
        /// guards) with [`ServerErrorsAsFailures`].
        pub fn new(controller: ChaosController) -> Self {
            HttpChaosLayer {
                controller,
                classify: ServerErrorsAsFailures,
            }
        }
    }

    impl<C> HttpChaosLayer<C> {
        /// Judges results with `classify` for the steady-state guards. It
        /// sees results as callers do: an injected 503 is a 503 response.
        pub fn classify<C2>(self, classify: C2) -> HttpChaosLayer<C2> {
            HttpChaosLayer {
                controller: self.controller,
                classify,
            }
        }

        /// The controller.
        pub fn controller(&self) -> &ChaosController {
            &self.controller
        }
    }

    impl<S, C: Clone> Layer<S> for HttpChaosLayer<C> {
        type Service = HttpChaos<S, C>;

        fn layer(&self, inner: S) -> Self::Service {
            HttpChaos::from_parts(inner, self.controller.shared.clone(), self.classify.clone())
        }
    }
}
