//! [`TokenBucketBudget`]: AWS standard mode and gRPC retry throttling.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use watertight_core::{config, ResponseClass};

use super::{remaining_gauge, Budget, Cause, Withdrawal};
use crate::error::{invalid, ConfigError, COMPONENT};

/// Thousandths of a token.
const MILLI: i64 = 1_000;

pub(super) const DEFAULT_AWS_MAX: u32 = 500;
pub(super) const DEFAULT_RETRY_COST: u32 = 5;
pub(super) const DEFAULT_TIMEOUT_COST: u32 = 10;
pub(super) const DEFAULT_SUCCESS_REFUND: u32 = 1;
const GRPC_MAX_TOKENS: u32 = 1000;

#[cfg(feature = "serde")]
pub(super) fn default_aws_max() -> u32 {
    DEFAULT_AWS_MAX
}
#[cfg(feature = "serde")]
pub(super) fn default_retry_cost() -> u32 {
    DEFAULT_RETRY_COST
}
#[cfg(feature = "serde")]
pub(super) fn default_timeout_cost() -> u32 {
    DEFAULT_TIMEOUT_COST
}
#[cfg(feature = "serde")]
pub(super) fn default_success_refund() -> u32 {
    DEFAULT_SUCCESS_REFUND
}

pub(super) fn validate_aws(
    max_tokens: u32,
    retry_cost: u32,
    timeout_cost: u32,
) -> Result<(), ConfigError> {
    if max_tokens == 0 {
        return Err(invalid("max_tokens", "must be at least 1"));
    }
    for (field, cost) in [("retry_cost", retry_cost), ("timeout_cost", timeout_cost)] {
        if cost == 0 || cost > max_tokens {
            return Err(invalid(
                field,
                format!("must be in 1..=max_tokens ({max_tokens}), got {cost}"),
            ));
        }
    }
    Ok(())
}

pub(super) fn validate_grpc(max_tokens: u32, token_ratio: f64) -> Result<(), ConfigError> {
    config::count(
        COMPONENT,
        "max_tokens",
        max_tokens.into(),
        GRPC_MAX_TOKENS.into(),
    )?;
    if !(token_ratio.is_finite() && token_ratio <= 1000.0 && (token_ratio * 1000.0).round() >= 1.0)
    {
        return Err(invalid(
            "token_ratio",
            format!("must be in 0.001..=1000, got {token_ratio}"),
        ));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rules {
    Aws {
        retry_cost: i64,
        timeout_cost: i64,
        success_refund: i64,
    },
    Grpc {
        token_ratio: i64,
        threshold: i64,
    },
}

/// A token bucket with the rules of the AWS SDKs' standard retry mode or of
/// gRPC retry throttling.
///
/// **AWS standard mode.** A client holds a bucket of 500 tokens, full at
/// start. A retry costs 5 tokens, or 10 when the failed attempt timed out,
/// and is refused when the bucket holds fewer. A request that succeeds on
/// its first attempt puts 1 token back; one that succeeds on a retry puts
/// back that retry's cost. The bucket never holds more than its size. So
/// under a total outage a client retries 100 times and then stops until
/// successes refill the bucket.
///
/// **gRPC retry throttling** (proposal A6, `retryThrottling`). A client
/// holds `max_tokens` tokens (at most 1000), full at start. Every failed
/// attempt (a retryable failure) takes 1 token away and every success adds
/// `token_ratio` (three decimals at most); tokens stay within
/// `[0, max_tokens]`. Retries and hedges are allowed only while the count is
/// above `max_tokens / 2`; they cost nothing themselves.
///
/// Tokens are counted in thousandths in one atomic integer.
///
/// ```
/// use watertight_core::{config, ResponseClass};
/// use watertight_retry::budget::{Budget, Cause, TokenBucketBudget};
///
/// let aws = TokenBucketBudget::aws_standard();
/// let granted = (0..200).filter(|_| aws.withdraw(Cause::Retry).is_some()).count();
/// assert_eq!(granted, 100); // 500 tokens, 5 per retry
///
/// let grpc = TokenBucketBudget::grpc(10, 0.1).unwrap();
/// for _ in 0..5 {
///     assert!(grpc.withdraw(Cause::Retry).is_some());
///     grpc.record(ResponseClass::RETRYABLE, None);
/// }
/// assert!(grpc.withdraw(Cause::Retry).is_none()); // 5 tokens: not above 10 / 2
/// ```
///
/// # Clone
///
/// Not `Clone`: a budget is shared through the `Arc` the layers hold, or
/// one you pass them.
pub struct TokenBucketBudget {
    name: Arc<str>,
    max: i64,
    tokens: AtomicI64,
    rules: Rules,
    gauge: metrics::Gauge,
}

impl TokenBucketBudget {
    /// AWS standard mode: 500 tokens, 5 per retry, 10 per retry after a
    /// timeout, 1 back per first-attempt success; named `retry`.
    pub fn aws_standard() -> Self {
        TokenBucketBudget::aws_builder()
            .build()
            .expect("the defaults are valid")
    }

    /// A builder with AWS standard-mode rules, starting from its defaults.
    pub fn aws_builder() -> TokenBucketBudgetBuilder {
        TokenBucketBudgetBuilder {
            name: "retry".to_owned(),
            max_tokens: DEFAULT_AWS_MAX,
            mode: Mode::Aws(AwsCosts {
                retry_cost: DEFAULT_RETRY_COST,
                timeout_cost: DEFAULT_TIMEOUT_COST,
                success_refund: DEFAULT_SUCCESS_REFUND,
            }),
            error: None,
        }
    }

    /// gRPC retry throttling with `max_tokens` (`1..=1000`) and `token_ratio`
    /// (`0.001..=1000`, three decimals; more are rounded); named `retry`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `max_tokens` or `token_ratio`.
    pub fn grpc(max_tokens: u32, token_ratio: f64) -> Result<Self, ConfigError> {
        TokenBucketBudget::grpc_builder(max_tokens, token_ratio).build()
    }

    /// A builder with gRPC throttling rules.
    pub fn grpc_builder(max_tokens: u32, token_ratio: f64) -> TokenBucketBudgetBuilder {
        TokenBucketBudgetBuilder {
            name: "retry".to_owned(),
            max_tokens,
            mode: Mode::Grpc { token_ratio },
            error: None,
        }
    }

    /// The name (the `name` label of its gauge).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tokens in the bucket now.
    pub fn tokens(&self) -> f64 {
        self.tokens.load(Ordering::Acquire) as f64 / MILLI as f64
    }

    /// The bucket's size.
    pub fn max_tokens(&self) -> u32 {
        (self.max / MILLI) as u32
    }

    fn add(&self, delta: i64) {
        let max = self.max;
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some((t + delta).clamp(0, max))
            });
    }

    fn update_gauge(&self) {
        self.gauge.set(self.remaining() as f64);
    }
}

impl Budget for TokenBucketBudget {
    #[inline]
    fn deposit(&self) {}

    fn withdraw(&self, cause: Cause) -> Option<Withdrawal> {
        let granted = match self.rules {
            Rules::Aws {
                retry_cost,
                timeout_cost,
                ..
            } => {
                let cost = if cause == Cause::Timeout {
                    timeout_cost
                } else {
                    retry_cost
                };
                self.tokens
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                        (t >= cost).then_some(t - cost)
                    })
                    .ok()
                    .map(|_| Withdrawal::new((cost / MILLI) as u32))
            }
            Rules::Grpc { threshold, .. } => {
                (self.tokens.load(Ordering::Acquire) > threshold).then_some(Withdrawal::new(0))
            }
        };
        self.update_gauge();
        granted
    }

    #[inline]
    fn record(&self, class: ResponseClass, withdrawal: Option<Withdrawal>) {
        match (self.rules, class) {
            // A full bucket stays full: skip the write on the hot path.
            (Rules::Aws { success_refund, .. }, ResponseClass::Success)
                if self.tokens.load(Ordering::Acquire) < self.max =>
            {
                let refund = match withdrawal {
                    Some(w) => i64::from(w.cost()) * MILLI,
                    None => success_refund,
                };
                self.add(refund);
                self.update_gauge();
            }
            (Rules::Grpc { token_ratio, .. }, ResponseClass::Success)
                if self.tokens.load(Ordering::Acquire) < self.max =>
            {
                self.add(token_ratio);
                self.update_gauge();
            }
            (Rules::Grpc { .. }, ResponseClass::Failure { retryable: true }) => {
                self.add(-MILLI);
                self.update_gauge();
            }
            _ => {}
        }
    }

    fn remaining(&self) -> u64 {
        let t = self.tokens.load(Ordering::Acquire);
        match self.rules {
            Rules::Aws { retry_cost, .. } => (t / retry_cost) as u64,
            Rules::Grpc { threshold, .. } => {
                // Failures it takes to bring the count down to the threshold.
                ((t - threshold).max(0) + MILLI - 1) as u64 / MILLI as u64
            }
        }
    }
}

impl fmt::Debug for TokenBucketBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TokenBucketBudget");
        d.field("name", &self.name)
            .field("max_tokens", &self.max_tokens())
            .field("tokens", &self.tokens());
        match self.rules {
            Rules::Aws {
                retry_cost,
                timeout_cost,
                success_refund,
            } => d
                .field("retry_cost", &(retry_cost / MILLI))
                .field("timeout_cost", &(timeout_cost / MILLI))
                .field("success_refund", &(success_refund / MILLI)),
            Rules::Grpc { token_ratio, .. } => {
                d.field("token_ratio", &(token_ratio as f64 / MILLI as f64))
            }
        };
        d.finish()
    }
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Aws(AwsCosts),
    Grpc { token_ratio: f64 },
}

#[derive(Clone, Copy, Debug)]
struct AwsCosts {
    retry_cost: u32,
    timeout_cost: u32,
    success_refund: u32,
}

/// Builds a [`TokenBucketBudget`]; from
/// [`aws_builder`](TokenBucketBudget::aws_builder) or
/// [`grpc_builder`](TokenBucketBudget::grpc_builder).
#[derive(Clone, Debug)]
pub struct TokenBucketBudgetBuilder {
    name: String,
    max_tokens: u32,
    mode: Mode,
    error: Option<ConfigError>,
}

impl TokenBucketBudgetBuilder {
    /// The `name` label of the gauge (default `retry`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The bucket's size and initial tokens (AWS default 500; gRPC at most
    /// 1000).
    pub fn max_tokens(mut self, max: u32) -> Self {
        self.max_tokens = max;
        self
    }

    /// The AWS costs to set `field` of; with gRPC rules, `None` and an
    /// error for [`build`](Self::build).
    fn aws(&mut self, field: &'static str) -> Option<&mut AwsCosts> {
        match &mut self.mode {
            Mode::Aws(costs) => Some(costs),
            Mode::Grpc { .. } => {
                self.error
                    .get_or_insert(invalid(field, "applies to AWS standard-mode rules only"));
                None
            }
        }
    }

    /// Tokens a retry costs (AWS rules; default 5).
    pub fn retry_cost(mut self, cost: u32) -> Self {
        if let Some(c) = self.aws("retry_cost") {
            c.retry_cost = cost;
        }
        self
    }

    /// Tokens a retry after a timed-out attempt costs (AWS rules; default
    /// 10).
    pub fn timeout_cost(mut self, cost: u32) -> Self {
        if let Some(c) = self.aws("timeout_cost") {
            c.timeout_cost = cost;
        }
        self
    }

    /// Tokens a first-attempt success puts back (AWS rules; default 1).
    pub fn success_refund(mut self, refund: u32) -> Self {
        if let Some(c) = self.aws("success_refund") {
            c.success_refund = refund;
        }
        self
    }

    /// Validates and builds the budget.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `name` (empty), `max_tokens` (zero; over
    /// 1000 for gRPC), `retry_cost` or `timeout_cost` (zero or above
    /// `max_tokens`), `token_ratio` (outside `0.001..=1000`), or an AWS
    /// setter used on gRPC rules.
    pub fn build(self) -> Result<TokenBucketBudget, ConfigError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        config::name(COMPONENT, &self.name)?;
        let max = i64::from(self.max_tokens) * MILLI;
        let rules = match self.mode {
            Mode::Aws(AwsCosts {
                retry_cost,
                timeout_cost,
                success_refund,
            }) => {
                validate_aws(self.max_tokens, retry_cost, timeout_cost)?;
                Rules::Aws {
                    retry_cost: i64::from(retry_cost) * MILLI,
                    timeout_cost: i64::from(timeout_cost) * MILLI,
                    success_refund: i64::from(success_refund) * MILLI,
                }
            }
            Mode::Grpc { token_ratio } => {
                validate_grpc(self.max_tokens, token_ratio)?;
                Rules::Grpc {
                    token_ratio: (token_ratio * MILLI as f64).round() as i64,
                    threshold: max / 2,
                }
            }
        };
        let budget = TokenBucketBudget {
            gauge: remaining_gauge(&self.name),
            name: self.name.into(),
            max,
            tokens: AtomicI64::new(max),
            rules,
        };
        budget.update_gauge();
        Ok(budget)
    }
}
