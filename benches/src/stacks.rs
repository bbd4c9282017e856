//! The peer stacks of the scenario comparison, configured as fairly as their
//! APIs allow.
//!
//! Every stack gets the same per-try timeout and maximum attempts from the
//! [`ClientContext`], counts 5xx responses and errors as failures, and is
//! seeded where its API takes an RNG. None of them can route by zone (their
//! balancers take no locality), so each spreads its client's requests over
//! all nine backends.
//!
//! - `tower`: `tower::balance::p2c::Balance` over `PeakEwma` endpoints
//!   (default RTT 30 ms, decay 10 s), shared through a `Buffer`, under the
//!   per-try `Timeout`, under `tower::retry::Retry` whose policy withdraws
//!   from a `TpsBudget` (10 s TTL, 10 retries/s floor, 20%) and sleeps an
//!   `ExponentialBackoff` (25 ms → 250 ms, full jitter) between attempts.
//! - `tower-resilience`: the same balancer, buffer and timeout, with
//!   tower-resilience's circuit breaker in backpressure mode on each
//!   endpoint (its defaults: count window 100, failure rate 50%, minimum
//!   20 calls, 30 s open), and tower-resilience's retry (exponential backoff
//!   from 25 ms; errors and 5xx retried) with its token-bucket budget (100
//!   tokens, one back per success).
//!
//! tower-resilience reads `std::time::Instant` for its breaker's open wait
//! and its budget's time refill. Under the simulation's virtual clock a
//! breaker that opens therefore stays open for the rest of a run (which
//! lasts a few seconds of real time), and a time refill would grant tokens
//! by the real time a run happens to take, making the results differ from
//! one run to the next: the budget is refilled by successes only
//! (`tokens_per_second(0.0)`). Everything else it does (its backoff sleeps,
//! its breaker's re-checks) follows the virtual clock. The comparison
//! reports it as it behaves; in a test suite with paused time this is what
//! its users get.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover};
use tower::retry::backoff::{Backoff, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff};
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, Retry};
use tower::timeout::Timeout;
use tower::util::rng::Rng as TowerRng;
use tower::util::BoxCloneService;
use tower::{BoxError, Service, ServiceExt};
use watertight_testkit::backend::ConnectionLost;
use watertight_testkit::{ClientContext, SimBackend, Stack};

/// Requests the buffer in front of a balancer holds.
const BUFFER: usize = 4096;

/// A deterministic RNG for tower's balancer and backoff (splitmix64).
#[derive(Clone, Debug)]
pub struct SeededRng(u64);

impl SeededRng {
    /// An RNG starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRng(seed)
    }
}

impl TowerRng for SeededRng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn is_failure<E>(result: &Result<Response<()>, E>) -> bool {
    match result {
        Ok(res) => res.status().is_server_error(),
        Err(_) => true,
    }
}

type Client = BoxCloneService<Request<()>, Response<()>, BoxError>;

/// The `tower` stack; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct TowerStack;

/// tower's retry policy for the comparison: retry failures while attempts
/// remain and the budget allows.
#[derive(Clone)]
struct TowerPolicy {
    budget: Arc<TpsBudget>,
    backoff: ExponentialBackoff<SeededRng>,
    attempts_left: u32,
    deposited: bool,
}

impl<E> Policy<Request<()>, Response<()>, E> for TowerPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _: &mut Request<()>,
        result: &mut Result<Response<()>, E>,
    ) -> Option<Self::Future> {
        if !self.deposited {
            // Every original request earns its share of retries.
            self.budget.deposit();
            self.deposited = true;
        }
        if !is_failure(result) || self.attempts_left <= 1 || !self.budget.withdraw() {
            return None;
        }
        self.attempts_left -= 1;
        Some(self.backoff.next_backoff())
    }

    fn clone_request(&mut self, req: &Request<()>) -> Option<Request<()>> {
        Some(req.clone())
    }
}

/// tower's P2C balancer over PeakEWMA endpoints.
type TowerBalance<S> = Balance<PeakEwmaDiscover<ServiceList<Vec<S>>>, Request<()>>;

/// The future of a [`TowerBalance`].
type TowerBalanceFuture<S> = <TowerBalance<S> as Service<Request<()>>>::Future;

/// tower's P2C over PeakEWMA endpoints, behind a buffer so clients can clone it.
fn tower_balancer<S>(endpoints: Vec<S>, seed: u64) -> Buffer<Request<()>, TowerBalanceFuture<S>>
where
    S: Service<Request<()>, Response = Response<()>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let discover = PeakEwmaDiscover::new(
        ServiceList::new::<Request<()>>(endpoints),
        Duration::from_millis(30),
        Duration::from_secs(10),
        CompleteOnResponse::default(),
    );
    Buffer::new(Balance::from_rng(discover, SeededRng::new(seed)), BUFFER)
}

impl Stack for TowerStack {
    type Service = Client;
    type Error = BoxError;
    type Future = <Client as Service<Request<()>>>::Future;

    fn name(&self) -> String {
        "tower".to_owned()
    }

    fn client(&self, ctx: &ClientContext) -> Client {
        let balancer = tower_balancer(ctx.backends.clone(), ctx.seed);
        let timeout = Timeout::new(balancer, ctx.per_try_timeout);
        let backoff = ExponentialBackoffMaker::new(
            Duration::from_millis(25),
            Duration::from_millis(250),
            1.0,
            SeededRng::new(ctx.seed ^ 0x5eed),
        )
        .expect("valid backoff")
        .make_backoff();
        let policy = TowerPolicy {
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            backoff,
            attempts_left: ctx.max_attempts,
            deposited: false,
        };
        Retry::new(policy, timeout).boxed_clone()
    }
}

/// The `tower-resilience` stack; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct TowerResilienceStack;

impl Stack for TowerResilienceStack {
    type Service = Client;
    type Error = BoxError;
    type Future = <Client as Service<Request<()>>>::Future;

    fn name(&self) -> String {
        "tower-resilience".to_owned()
    }

    fn client(&self, ctx: &ClientContext) -> Client {
        let endpoints: Vec<_> = ctx
            .backends
            .iter()
            .map(|backend: &SimBackend| {
                let breaker = tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
                    .failure_rate_threshold(0.5)
                    .sliding_window_size(100)
                    .minimum_number_of_calls(20)
                    .backpressure()
                    .failure_classifier(|r: &Result<Response<()>, ConnectionLost>| is_failure(r))
                    .build()
                    .expect("valid breaker");
                tower::Layer::layer(&breaker, backend.clone())
            })
            .collect();
        let balancer = tower_balancer(endpoints, ctx.seed);
        let timeout = Timeout::new(balancer, ctx.per_try_timeout);
        // Refilled by successes only: its time-based refill reads the wall
        // clock, which would make the runs differ from one to the next.
        let budget = tower_resilience_retry::RetryBudgetBuilder::new()
            .token_bucket()
            .tokens_per_second(0.0)
            .max_tokens(100)
            .build()
            .expect("valid budget");
        let retry =
            tower_resilience_retry::RetryLayer::<Request<()>, Response<()>, BoxError>::builder()
                .max_attempts(ctx.max_attempts as usize)
                .exponential_backoff(Duration::from_millis(25))
                .retry_on(|_: &BoxError| true)
                .retry_on_response(|res: &Response<()>| res.status().is_server_error())
                .budget(budget)
                .build();
        tower::Layer::layer(&retry, timeout).boxed_clone()
    }
}
