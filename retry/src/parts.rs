//! What the retry and hedging builders have in common: a configuration, the
//! budget (made from the configuration unless one is given), a policy and
//! an event listener, validated together into a layer's parts.

use std::fmt;
use std::sync::Arc;

use crate::budget::{AnyBudget, Budget, BudgetConfig};
use crate::error::ConfigError;
use crate::event::{Event, Listener};

/// A layer configuration the shared builder parts work with.
pub(crate) trait LayerConfig: Sized + 'static {
    /// The instance name, which also names a budget made from
    /// [`budget_config`](Self::budget_config).
    fn name(&self) -> &str;

    /// The budget to make when the builder is given none.
    fn budget_config(&self) -> BudgetConfig;

    /// Checks every rule of the configuration.
    fn validate(&self) -> Result<(), ConfigError>;
}

type MakeBudget<C, B> = Box<dyn FnOnce(&C) -> Result<Arc<B>, ConfigError> + Send>;

/// A builder's parts, not yet validated.
pub(crate) struct Parts<C, B, P> {
    pub(crate) config: C,
    budget: MakeBudget<C, B>,
    budget_given: bool,
    policy: P,
    listener: Option<Listener>,
}

/// A layer's parts, validated.
pub(crate) struct Built<C, B, P> {
    pub(crate) config: C,
    pub(crate) budget: Arc<B>,
    pub(crate) policy: P,
    pub(crate) listener: Option<Listener>,
}

impl<C: LayerConfig, P> Parts<C, AnyBudget, P> {
    /// `config` and `policy`, with the budget `config` describes.
    pub(crate) fn new(config: C, policy: P) -> Self {
        Parts {
            config,
            budget: Box::new(|c: &C| c.budget_config().build(c.name()).map(Arc::new)),
            budget_given: false,
            policy,
            listener: None,
        }
    }
}

impl<C: LayerConfig, B, P> Parts<C, B, P> {
    /// The same parts with `budget` instead.
    pub(crate) fn shared_budget<B2: Budget>(self, budget: Arc<B2>) -> Parts<C, B2, P> {
        Parts {
            config: self.config,
            budget: Box::new(move |_| Ok(budget)),
            budget_given: true,
            policy: self.policy,
            listener: self.listener,
        }
    }

    /// The same parts with the policy `f` makes of this one.
    pub(crate) fn map_policy<P2>(self, f: impl FnOnce(P) -> P2) -> Parts<C, B, P2> {
        Parts {
            config: self.config,
            budget: self.budget,
            budget_given: self.budget_given,
            policy: f(self.policy),
            listener: self.listener,
        }
    }

    pub(crate) fn on_event<F>(&mut self, listener: F)
    where
        F: Fn(&Event) + Send + Sync + 'static,
    {
        self.listener = Some(Arc::new(listener));
    }

    /// Validates the configuration, then makes the budget.
    pub(crate) fn build(self) -> Result<Built<C, B, P>, ConfigError> {
        self.config.validate()?;
        let budget = (self.budget)(&self.config)?;
        Ok(Built {
            config: self.config,
            budget,
            policy: self.policy,
            listener: self.listener,
        })
    }

    /// The builder's `Debug`.
    pub(crate) fn debug(&self, f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result
    where
        C: fmt::Debug,
        P: fmt::Debug,
    {
        f.debug_struct(name)
            .field("config", &self.config)
            .field("budget_given", &self.budget_given)
            .field("policy", &self.policy)
            .field("on_event", &self.listener.is_some())
            .finish()
    }
}
