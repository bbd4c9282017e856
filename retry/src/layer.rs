use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use crate::budget::{AnyBudget, Budget};
use crate::config::{Builder, Config};
use crate::error::ConfigError;
use crate::handle::RetryHandle;
use crate::parts::Built;
use crate::policy::StandardPolicy;
use crate::service::Retry;
use crate::shared::Shared;

/// Wraps services in a [`Retry`].
///
/// # Clone
///
/// A layer holds one budget and one set of counters (in an `Arc`): every
/// service it wraps, every clone of those, and every clone of the layer
/// share them. That is what a client wants: one budget for all its
/// requests, whichever endpoint or task sends them. Build another layer for
/// an independent budget.
pub struct RetryLayer<B = AnyBudget, P = StandardPolicy> {
    shared: Arc<Shared<B, P>>,
}

impl<B, P> Clone for RetryLayer<B, P> {
    fn clone(&self) -> Self {
        RetryLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<B: fmt::Debug, P: fmt::Debug> fmt::Debug for RetryLayer<B, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

impl Default for RetryLayer {
    fn default() -> Self {
        RetryLayer::new()
    }
}

impl RetryLayer {
    /// A layer with the defaults of [`Config`] and
    /// [`StandardPolicy`].
    pub fn new() -> Self {
        Builder::new().build().expect("the defaults are valid")
    }

    /// A builder starting from the defaults.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// A layer from a configuration (read with serde, say), with the
    /// default policy.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field; see
    /// [`Config::validate`].
    pub fn from_config(config: Config) -> Result<Self, ConfigError> {
        Builder::new().config(config).build()
    }
}

impl<B: Budget, P: Send + Sync + 'static> RetryLayer<B, P> {
    pub(crate) fn from_parts(parts: Built<Config, B, P>) -> Self {
        RetryLayer {
            shared: Arc::new(Shared::new(parts)),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The budget.
    pub fn budget(&self) -> &Arc<B> {
        &self.shared.budget
    }

    /// The policy.
    pub fn policy(&self) -> &P {
        &self.shared.policy
    }

    /// A handle observing and controlling this layer.
    pub fn handle(&self) -> RetryHandle {
        RetryHandle {
            inner: self.shared.clone(),
        }
    }
}

impl<S, B, P> Layer<S> for RetryLayer<B, P> {
    type Service = Retry<S, B, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_parts(inner, self.shared.clone())
    }
}
