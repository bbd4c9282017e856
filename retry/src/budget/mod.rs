//! Retry budgets: how many retries (and hedges) a client may add on top of
//! its requests.
//!
//! A per-request limit (`max_attempts`) does not stop a retry storm: when
//! every backend fails, every request is sent `max_attempts` times and the
//! load on the struggling backends triples. A budget caps retries across all
//! requests of a client, so a brownout costs a bounded share of extra load.
//! Every retry and every hedge withdraws from one; when it refuses, the
//! request ends with its last real error.
//!
//! | budget | rule | from |
//! |---|---|---|
//! | [`RatioBudget`] (the default) | retries over the last `ttl` ≤ `ratio` × requests over the last `ttl` + `min_per_sec` × `ttl` | Finagle's `RetryBudget` (20%, 10/s, 10 s), without tower's fractional-ratio bug ([tower#857]) |
//! | [`ConcurrencyBudget`] | retries in flight < max(`ratio` × requests in flight, `min_concurrency`) | Envoy's cluster circuit-breaker `retry_budget` (20%, 3) |
//! | [`TokenBucketBudget::aws_standard`] | a retry costs 5 tokens (10 after a timeout) from a bucket of 500; a success refunds 1 (or the retry's cost) | AWS SDKs' standard retry mode |
//! | [`TokenBucketBudget::grpc`] | a failure costs 1 token, a success earns `token_ratio`; retries only while tokens > `max_tokens` / 2 | gRPC retry throttling (proposal A6) |
//!
//! A budget is shared: every service a layer wraps, and their clones,
//! withdraw from the one budget the layer holds (in an `Arc`). Each budget
//! sets the gauge `watertight_retry_budget_remaining{name}` to what it would
//! grant now.
//!
//! [tower#857]: https://github.com/tower-rs/tower/issues/857

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use watertight_core::ResponseClass;

use crate::error::{invalid, ConfigError, COMPONENT};

mod concurrency;
mod ratio;
mod token;

pub use concurrency::{ConcurrencyBudget, ConcurrencyBudgetBuilder};
pub use ratio::{RatioBudget, RatioBudgetBuilder};
pub use token::{TokenBucketBudget, TokenBucketBudgetBuilder};

/// What an extra attempt is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// A retry after a failed attempt.
    Retry,
    /// A retry after an attempt that timed out (AWS charges more for it).
    Timeout,
    /// A hedge: a backup copy of a request still in flight.
    Hedge,
}

/// What a granted withdrawal took; handed back to
/// [`Budget::release`] and [`Budget::record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Withdrawal {
    cost: u32,
}

impl Withdrawal {
    /// A withdrawal of `cost` units (tokens for a token bucket, 1 for the
    /// others).
    pub const fn new(cost: u32) -> Self {
        Withdrawal { cost }
    }

    /// The units taken.
    pub const fn cost(self) -> u32 {
        self.cost
    }
}

/// A retry budget. See the [module docs](self).
///
/// The layers call, for each logical request: [`deposit`](Self::deposit)
/// once when it starts; [`record`](Self::record) with each attempt's
/// outcome; [`withdraw`](Self::withdraw) before each retry or hedge, and
/// [`release`](Self::release) when an attempt so granted ends (completed,
/// failed or cancelled); [`finish`](Self::finish) once when the request
/// ends or is dropped. The methods take `&self`: a budget is shared by every
/// clone of a service and must be safe to call from many threads.
pub trait Budget: fmt::Debug + Send + Sync + 'static {
    /// A logical request starts.
    fn deposit(&self);

    /// Asks for one extra attempt. Returns what was taken, or `None` when
    /// the budget refuses.
    fn withdraw(&self, cause: Cause) -> Option<Withdrawal>;

    /// An attempt granted by [`withdraw`](Self::withdraw) ended.
    fn release(&self, withdrawal: Withdrawal) {
        let _ = withdrawal;
    }

    /// An attempt's outcome; `withdrawal` is what that attempt took (`None`
    /// for a request's first attempt). Cancelled attempts are not recorded.
    fn record(&self, class: ResponseClass, withdrawal: Option<Withdrawal>) {
        let _ = (class, withdrawal);
    }

    /// A logical request ended.
    fn finish(&self) {}

    /// How many extra attempts the budget would grant now, with no new
    /// requests (for gRPC throttling: how many more failures it absorbs
    /// before it stops retries).
    fn remaining(&self) -> u64;
}

impl<B: Budget + ?Sized> Budget for Arc<B> {
    #[inline]
    fn deposit(&self) {
        (**self).deposit()
    }

    #[inline]
    fn withdraw(&self, cause: Cause) -> Option<Withdrawal> {
        (**self).withdraw(cause)
    }

    #[inline]
    fn release(&self, withdrawal: Withdrawal) {
        (**self).release(withdrawal)
    }

    #[inline]
    fn record(&self, class: ResponseClass, withdrawal: Option<Withdrawal>) {
        (**self).record(class, withdrawal)
    }

    #[inline]
    fn finish(&self) {
        (**self).finish()
    }

    fn remaining(&self) -> u64 {
        (**self).remaining()
    }
}

/// One of the ready-made budgets, chosen by configuration.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyBudget {
    /// A [`RatioBudget`].
    Ratio(RatioBudget),
    /// A [`ConcurrencyBudget`].
    Concurrency(ConcurrencyBudget),
    /// A [`TokenBucketBudget`].
    TokenBucket(TokenBucketBudget),
}

macro_rules! dispatch {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            AnyBudget::Ratio($b) => $e,
            AnyBudget::Concurrency($b) => $e,
            AnyBudget::TokenBucket($b) => $e,
        }
    };
}

impl Budget for AnyBudget {
    #[inline]
    fn deposit(&self) {
        dispatch!(self, b => b.deposit())
    }

    #[inline]
    fn withdraw(&self, cause: Cause) -> Option<Withdrawal> {
        dispatch!(self, b => b.withdraw(cause))
    }

    #[inline]
    fn release(&self, withdrawal: Withdrawal) {
        dispatch!(self, b => b.release(withdrawal))
    }

    #[inline]
    fn record(&self, class: ResponseClass, withdrawal: Option<Withdrawal>) {
        dispatch!(self, b => b.record(class, withdrawal))
    }

    #[inline]
    fn finish(&self) {
        dispatch!(self, b => b.finish())
    }

    fn remaining(&self) -> u64 {
        dispatch!(self, b => b.remaining())
    }
}

impl From<RatioBudget> for AnyBudget {
    fn from(b: RatioBudget) -> Self {
        AnyBudget::Ratio(b)
    }
}

impl From<ConcurrencyBudget> for AnyBudget {
    fn from(b: ConcurrencyBudget) -> Self {
        AnyBudget::Concurrency(b)
    }
}

impl From<TokenBucketBudget> for AnyBudget {
    fn from(b: TokenBucketBudget) -> Self {
        AnyBudget::TokenBucket(b)
    }
}

/// A budget's configuration, for [`Config::budget`](crate::Config::budget).
///
/// With feature `serde` it reads from a table tagged by `kind` (TOML shown;
/// omitted fields take the defaults):
///
/// ```toml
/// budget = { kind = "ratio", ratio = 0.2, min_per_sec = 10, ttl = "10s" }
/// # budget = { kind = "concurrency", ratio = 0.2, min_concurrency = 3 }
/// # budget = { kind = "token_bucket", max_tokens = 500, retry_cost = 5, timeout_cost = 10, success_refund = 1 }
/// # budget = { kind = "grpc", max_tokens = 10, token_ratio = 0.1 }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)
)]
#[non_exhaustive]
pub enum BudgetConfig {
    /// A [`RatioBudget`].
    Ratio {
        /// Retries per request, `0..=1000` (default 0.2).
        #[cfg_attr(feature = "serde", serde(default = "ratio::default_ratio"))]
        ratio: f64,
        /// Retries per second always allowed (default 10).
        #[cfg_attr(feature = "serde", serde(default = "ratio::default_min_per_sec"))]
        min_per_sec: u32,
        /// How long a request counts, `1s..=60s` (default 10 s).
        #[cfg_attr(
            feature = "serde",
            serde(default = "ratio::default_ttl", with = "humantime_serde")
        )]
        ttl: Duration,
    },
    /// A [`ConcurrencyBudget`].
    Concurrency {
        /// Retries in flight per request in flight, `0..=1000` (default 0.2).
        #[cfg_attr(feature = "serde", serde(default = "ratio::default_ratio"))]
        ratio: f64,
        /// Retries in flight always allowed (default 3).
        #[cfg_attr(
            feature = "serde",
            serde(default = "concurrency::default_min_concurrency")
        )]
        min_concurrency: u32,
    },
    /// A [`TokenBucketBudget`] with AWS standard-mode rules.
    TokenBucket {
        /// Bucket size and initial tokens (default 500).
        #[cfg_attr(feature = "serde", serde(default = "token::default_aws_max"))]
        max_tokens: u32,
        /// Tokens a retry costs (default 5).
        #[cfg_attr(feature = "serde", serde(default = "token::default_retry_cost"))]
        retry_cost: u32,
        /// Tokens a retry after a timeout costs (default 10).
        #[cfg_attr(feature = "serde", serde(default = "token::default_timeout_cost"))]
        timeout_cost: u32,
        /// Tokens a first-attempt success earns (default 1).
        #[cfg_attr(feature = "serde", serde(default = "token::default_success_refund"))]
        success_refund: u32,
    },
    /// A [`TokenBucketBudget`] with gRPC retry-throttling rules.
    Grpc {
        /// Bucket size and initial tokens, `1..=1000`.
        max_tokens: u32,
        /// Tokens a success earns, `(0, 1000]`, three decimals at most.
        token_ratio: f64,
    },
}

impl Default for BudgetConfig {
    /// A [`RatioBudget`] with Finagle's defaults.
    fn default() -> Self {
        BudgetConfig::ratio(ratio::DEFAULT_RATIO)
    }
}

impl BudgetConfig {
    /// A [`RatioBudget`] of `ratio`, with Finagle's 10 retries per second
    /// over 10 s.
    pub(crate) fn ratio(ratio: f64) -> Self {
        BudgetConfig::Ratio {
            ratio,
            min_per_sec: ratio::DEFAULT_MIN_PER_SEC,
            ttl: ratio::DEFAULT_TTL,
        }
    }

    /// Builds the budget, with `name` as the `name` label of its gauge.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the invalid field (`budget.ratio`, …); the
    /// rules are those of each budget's builder.
    pub fn build(&self, name: &str) -> Result<AnyBudget, ConfigError> {
        match *self {
            BudgetConfig::Ratio {
                ratio,
                min_per_sec,
                ttl,
            } => RatioBudget::builder()
                .name(name)
                .ratio(ratio)
                .min_per_sec(min_per_sec)
                .ttl(ttl)
                .build()
                .map(AnyBudget::from),
            BudgetConfig::Concurrency {
                ratio,
                min_concurrency,
            } => ConcurrencyBudget::builder()
                .name(name)
                .ratio(ratio)
                .min_concurrency(min_concurrency)
                .build()
                .map(AnyBudget::from),
            BudgetConfig::TokenBucket {
                max_tokens,
                retry_cost,
                timeout_cost,
                success_refund,
            } => TokenBucketBudget::aws_builder()
                .name(name)
                .max_tokens(max_tokens)
                .retry_cost(retry_cost)
                .timeout_cost(timeout_cost)
                .success_refund(success_refund)
                .build()
                .map(AnyBudget::from),
            BudgetConfig::Grpc {
                max_tokens,
                token_ratio,
            } => TokenBucketBudget::grpc_builder(max_tokens, token_ratio)
                .name(name)
                .build()
                .map(AnyBudget::from),
        }
        .map_err(|e| e.within(COMPONENT, "budget"))
    }

    /// Checks the rules of [`build`](Self::build) without building.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            BudgetConfig::Ratio {
                ratio,
                min_per_sec: _,
                ttl,
            } => ratio::validate(ratio, ttl),
            BudgetConfig::Concurrency { ratio, .. } => concurrency::validate(ratio),
            BudgetConfig::TokenBucket {
                max_tokens,
                retry_cost,
                timeout_cost,
                ..
            } => token::validate_aws(max_tokens, retry_cost, timeout_cost),
            BudgetConfig::Grpc {
                max_tokens,
                token_ratio,
            } => token::validate_grpc(max_tokens, token_ratio),
        }
        .map_err(|e| e.within(COMPONENT, "budget"))
    }
}

/// The gauge every budget keeps.
fn remaining_gauge(name: &str) -> metrics::Gauge {
    metrics::gauge!("watertight_retry_budget_remaining", "name" => name.to_owned())
}

/// Checks a ratio field: finite and in `0..=1000` (core's `within_range`
/// words the range differently, and the message is part of the API).
fn check_ratio(field: &'static str, ratio: f64) -> Result<(), ConfigError> {
    if ratio.is_finite() && (0.0..=1000.0).contains(&ratio) {
        Ok(())
    } else {
        Err(invalid(field, format!("must be in 0..=1000, got {ratio}")))
    }
}
