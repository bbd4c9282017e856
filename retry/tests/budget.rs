//! Retry budgets: each budget's exact limit, against a reference model, over
//! random sequences of requests, failures, retries and time.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::advance;
use tower::{service_fn, Layer, Service, ServiceExt};
use watertight_core::{BoxError, ResponseClass};
use watertight_retry::budget::{
    Budget, Cause, ConcurrencyBudget, RatioBudget, TokenBucketBudget, Withdrawal,
};
use watertight_retry::RetryLayer;

use support::*;

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

fn retries_granted(budget: &RatioBudget, asks: usize) -> usize {
    (0..asks)
        .filter(|_| budget.withdraw(Cause::Retry).is_some())
        .count()
}

/// tower#857: tower's `TpsBudget` turns a 0.6 ratio into one deposit per
/// retry, so 100 requests buy 100 retries. Here they buy 60.
#[tokio::test(start_paused = true)]
async fn fractional_ratio_is_exact_where_tower_857_over_allocates() {
    use tower::retry::budget::{Budget as _, TpsBudget};

    let ours = ratio_only(0.6);
    let towers = TpsBudget::new(Duration::from_secs(10), 0, 0.6);
    for _ in 0..100 {
        ours.deposit();
        towers.deposit();
    }
    assert_eq!(retries_granted(&ours, 200), 60);
    let tower_granted = (0..200).filter(|_| towers.withdraw()).count();
    assert_eq!(
        tower_granted, 100,
        "tower#857 is fixed upstream: update the docs"
    );
}

#[tokio::test(start_paused = true)]
async fn ratio_budget_grants_exactly_ratio_times_requests() {
    for (ratio, requests, want) in [
        (0.2, 100, 20),
        (0.1, 95, 9),
        (0.25, 10, 2),
        (0.333333, 3, 0),
        (0.333334, 3, 1),
        (0.75, 4, 3),
        (1.5, 10, 15),
        (0.0, 1000, 0),
    ] {
        let b = ratio_only(ratio);
        for _ in 0..requests {
            b.deposit();
        }
        assert_eq!(b.remaining(), want, "ratio {ratio}");
        assert_eq!(retries_granted(&b, 10_000), want as usize, "ratio {ratio}");
        assert_eq!(b.remaining(), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn ratio_budget_reserve_is_min_per_sec_times_ttl_and_refills() {
    let b = RatioBudget::builder()
        .ratio(0.0)
        .min_per_sec(10)
        .ttl(Duration::from_secs(10))
        .build()
        .unwrap();
    assert_eq!(b.remaining(), 100);
    assert_eq!(retries_granted(&b, 1000), 100);
    // Withdrawals count for the TTL, then the reserve is whole again.
    advance(Duration::from_secs(9)).await;
    assert_eq!(retries_granted(&b, 1), 0);
    advance(Duration::from_secs(1)).await;
    assert_eq!(b.remaining(), 100);
}

#[tokio::test(start_paused = true)]
async fn ratio_budget_deposits_expire_after_the_ttl() {
    let b = RatioBudget::builder()
        .ratio(1.0)
        .min_per_sec(0)
        .ttl(Duration::from_secs(2))
        .build()
        .unwrap();
    for _ in 0..10 {
        b.deposit();
    }
    advance(Duration::from_millis(1900)).await;
    assert_eq!(b.remaining(), 10);
    advance(Duration::from_millis(100)).await;
    assert_eq!(b.remaining(), 0);
}

#[derive(Clone, Debug)]
enum RatioOp {
    Advance(u64),
    Deposit(u32),
    Withdraw(u32),
}

fn ratio_ops() -> impl Strategy<Value = Vec<RatioOp>> {
    prop::collection::vec(
        prop_oneof![
            (0u64..3_000).prop_map(RatioOp::Advance),
            (1u32..30).prop_map(RatioOp::Deposit),
            (1u32..30).prop_map(RatioOp::Withdraw),
        ],
        1..80,
    )
}

fn ratios() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.6),
        Just(0.2),
        Just(0.0),
        (0u32..=3_000).prop_map(|m| f64::from(m) / 1_000.0),
        (0u32..=2_000_000).prop_map(|m| f64::from(m) / 1_000_000.0),
        Just(1.0 / 3.0),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// At every retry asked for, the budget grants it exactly when the
    /// retries already granted in the live window stay within
    /// `ratio × requests + min_per_sec × ttl` of that window, requests
    /// counted in the slot of the budget's latest clock reading (every
    /// eighth deposit, every withdrawal): never more (no retry storm), never
    /// fewer (no starvation). Counted in the slots they truly fell in, the
    /// retries never exceed the formula either.
    #[test]
    fn ratio_budget_follows_its_formula(
        ratio in ratios(),
        min_per_sec in 0u32..5,
        ttl_secs in 1u64..=10,
        ops in ratio_ops(),
    ) {
        const SCALE: i128 = 1_000_000;
        let rt = paused_runtime();
        rt.block_on(async {
            let ttl = Duration::from_secs(ttl_secs);
            let b = RatioBudget::builder().ratio(ratio).min_per_sec(min_per_sec).ttl(ttl).build().unwrap();
            let origin = tokio::time::Instant::now();
            let slot = ttl.as_nanos() / 10;
            let deposit = (ratio * SCALE as f64).round() as i128;
            let reserve = i128::from(min_per_sec) * ttl.as_nanos() as i128 / 1_000;
            // (recorded epoch, true epoch, deposits, retries granted)
            let mut log: Vec<(u128, u128, i128, i128)> = Vec::new();
            let epoch = || origin.elapsed().as_nanos() / slot;
            // The budget's view of time: its latest clock reading.
            let mut observed = 0u128;
            let mut deposits = 0u64;
            for op in ops {
                match op {
                    RatioOp::Advance(ms) => advance(Duration::from_millis(ms)).await,
                    RatioOp::Deposit(n) => {
                        for _ in 0..n {
                            if deposits.is_multiple_of(8) {
                                observed = observed.max(epoch());
                            }
                            deposits += 1;
                            b.deposit();
                            log.push((observed, epoch(), 1, 0));
                        }
                    }
                    RatioOp::Withdraw(n) => {
                        for _ in 0..n {
                            let k = epoch();
                            observed = observed.max(k);
                            let live = |e: u128| e + 10 > k;
                            let d: i128 = log.iter().filter(|x| live(x.0)).map(|x| x.2).sum();
                            let w: i128 = log.iter().filter(|x| live(x.0)).map(|x| x.3).sum();
                            let limit = (reserve + deposit * d) / SCALE;
                            let granted = b.withdraw(Cause::Retry).is_some();
                            prop_assert_eq!(granted, w < limit, "ratio {} d {} w {} limit {}", ratio, d, w, limit);
                            if granted {
                                log.push((k, k, 0, 1));
                                let d_true: i128 = log.iter().filter(|x| live(x.1)).map(|x| x.2).sum();
                                let w_true: i128 = log.iter().filter(|x| live(x.1)).map(|x| x.3).sum();
                                prop_assert!(w_true <= (reserve + deposit * d_true) / SCALE);
                            }
                        }
                    }
                }
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}

#[derive(Clone, Debug)]
enum ConcOp {
    Start,
    End,
    Retry,
    RetryEnds,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Envoy's rule: a retry starts only while the retries in flight are
    /// fewer than `max(min_concurrency, ⌊ratio × requests in flight⌋)`.
    #[test]
    fn concurrency_budget_follows_envoys_formula(
        ratio_milli in 0u32..=1_500,
        min in 0u32..5,
        ops in prop::collection::vec(prop_oneof![
            3 => Just(ConcOp::Start),
            1 => Just(ConcOp::End),
            2 => Just(ConcOp::Retry),
            1 => Just(ConcOp::RetryEnds),
        ], 1..200),
    ) {
        let ratio = f64::from(ratio_milli) / 1_000.0;
        let b = ConcurrencyBudget::builder().ratio(ratio).min_concurrency(min).build().unwrap();
        let (mut active, mut retries): (u64, Vec<Withdrawal>) = (0, Vec::new());
        for op in ops {
            match op {
                ConcOp::Start => { b.deposit(); active += 1; }
                ConcOp::End if active > 0 => { b.finish(); active -= 1; }
                ConcOp::RetryEnds => {
                    if let Some(w) = retries.pop() {
                        b.release(w);
                    }
                }
                ConcOp::Retry => {
                    let limit = u64::from(min).max(active * u64::from(ratio_milli) / 1_000);
                    let granted = b.withdraw(Cause::Retry);
                    prop_assert_eq!(granted.is_some(), (retries.len() as u64) < limit);
                    if let Some(w) = granted {
                        retries.push(w);
                        prop_assert!(retries.len() as u64 <= limit);
                    }
                }
                ConcOp::End => {}
            }
            prop_assert_eq!(b.active_requests(), active);
            prop_assert_eq!(b.active_retries(), retries.len() as u64);
        }
    }
}

#[derive(Clone, Debug)]
enum TokenOp {
    /// An attempt's outcome; `Some(i)` marks it a retry granted by the
    /// `i`-th outstanding withdrawal.
    Success(Option<usize>),
    Failure,
    Retry {
        timeout: bool,
    },
}

fn token_ops() -> impl Strategy<Value = Vec<TokenOp>> {
    prop::collection::vec(
        prop_oneof![
            2 => prop::option::of(0usize..4).prop_map(TokenOp::Success),
            2 => Just(TokenOp::Failure),
            3 => any::<bool>().prop_map(|timeout| TokenOp::Retry { timeout }),
        ],
        1..300,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// AWS standard mode: a retry costs `retry_cost` (`timeout_cost` after a
    /// timeout) while the bucket holds as much; a first-attempt success puts
    /// back `success_refund`, a successful retry its cost; the bucket never
    /// holds more than its size.
    #[test]
    fn token_bucket_follows_aws_standard_mode(
        max in 1u32..600,
        retry_cost in 1u32..12,
        timeout_extra in 0u32..12,
        refund in 0u32..3,
        ops in token_ops(),
    ) {
        let timeout_cost = (retry_cost + timeout_extra).min(max);
        let retry_cost = retry_cost.min(max);
        let b = TokenBucketBudget::aws_builder()
            .max_tokens(max)
            .retry_cost(retry_cost)
            .timeout_cost(timeout_cost)
            .success_refund(refund)
            .build()
            .unwrap();
        let mut tokens = i64::from(max);
        let mut granted: Vec<Withdrawal> = Vec::new();
        for op in ops {
            match op {
                TokenOp::Retry { timeout } => {
                    let cost = i64::from(if timeout { timeout_cost } else { retry_cost });
                    let w = b.withdraw(if timeout { Cause::Timeout } else { Cause::Retry });
                    prop_assert_eq!(w.is_some(), tokens >= cost);
                    if let Some(w) = w {
                        prop_assert_eq!(i64::from(w.cost()), cost);
                        tokens -= cost;
                        granted.push(w);
                    }
                }
                TokenOp::Success(retry) => {
                    let w = retry.and_then(|i| (i < granted.len()).then(|| granted.remove(i)));
                    b.record(ResponseClass::Success, w);
                    let back = w.map_or(i64::from(refund), |w| i64::from(w.cost()));
                    tokens = (tokens + back).min(i64::from(max));
                }
                TokenOp::Failure => b.record(ResponseClass::RETRYABLE, None),
            }
            prop_assert_eq!(b.tokens(), tokens as f64);
            prop_assert_eq!(b.remaining(), (tokens / i64::from(retry_cost)) as u64);
        }
    }

    /// gRPC retry throttling: a failed attempt takes one token, a success
    /// adds `token_ratio`, within `[0, max_tokens]`; retries are allowed only
    /// while the count is above `max_tokens / 2`.
    #[test]
    fn token_bucket_follows_grpc_throttling(
        max in 1u32..=100,
        ratio_milli in 1u32..2_000,
        ops in token_ops(),
    ) {
        let b = TokenBucketBudget::grpc(max, f64::from(ratio_milli) / 1_000.0).unwrap();
        let max_milli = i64::from(max) * 1_000;
        let mut milli = max_milli;
        for op in ops {
            match op {
                TokenOp::Retry { .. } => {
                    let w = b.withdraw(Cause::Retry);
                    prop_assert_eq!(w.is_some(), milli > max_milli / 2);
                }
                TokenOp::Success(_) => {
                    b.record(ResponseClass::Success, None);
                    milli = (milli + i64::from(ratio_milli)).min(max_milli);
                }
                TokenOp::Failure => {
                    b.record(ResponseClass::RETRYABLE, None);
                    milli = (milli - 1_000).max(0);
                }
            }
            prop_assert_eq!(b.tokens(), milli as f64 / 1_000.0);
        }
    }
}

#[test]
fn aws_standard_mode_defaults() {
    let b = TokenBucketBudget::aws_standard();
    assert_eq!(b.max_tokens(), 500);
    assert_eq!(b.remaining(), 100);
    // Timeouts cost twice as much.
    let t = b.withdraw(Cause::Timeout).unwrap();
    assert_eq!(t.cost(), 10);
    let r = b.withdraw(Cause::Retry).unwrap();
    assert_eq!(r.cost(), 5);
    assert_eq!(b.tokens(), 485.0);
    // A successful retry gives its cost back; a first-attempt success, 1.
    b.record(ResponseClass::Success, Some(r));
    b.record(ResponseClass::Success, None);
    assert_eq!(b.tokens(), 491.0);
    // Failures cost nothing by themselves.
    b.record(ResponseClass::RETRYABLE, None);
    assert_eq!(b.tokens(), 491.0);
    let granted = (0..1000)
        .filter(|_| b.withdraw(Cause::Retry).is_some())
        .count();
    assert_eq!(granted, 98);
}

#[test]
fn grpc_throttling_stops_retries_at_half_the_tokens() {
    let b = TokenBucketBudget::grpc(10, 0.1).unwrap();
    for _ in 0..4 {
        b.record(ResponseClass::RETRYABLE, None);
    }
    assert_eq!(b.tokens(), 6.0);
    assert_eq!(b.remaining(), 1);
    assert!(b.withdraw(Cause::Retry).is_some());
    b.record(ResponseClass::RETRYABLE, None);
    assert!(
        b.withdraw(Cause::Retry).is_none(),
        "5 tokens is not above 10 / 2"
    );
    assert!(b.withdraw(Cause::Hedge).is_none());
    // Ten successes earn one token back.
    for _ in 0..10 {
        b.record(ResponseClass::Success, None);
    }
    assert_eq!(b.tokens(), 6.0);
    assert!(b.withdraw(Cause::Retry).is_some());
}

#[test]
fn budget_builders_name_bad_fields() {
    assert_eq!(
        TokenBucketBudget::grpc(0, 0.1).unwrap_err().field(),
        "max_tokens"
    );
    assert_eq!(
        TokenBucketBudget::grpc(1001, 0.1).unwrap_err().field(),
        "max_tokens"
    );
    assert_eq!(
        TokenBucketBudget::grpc(10, 0.0001).unwrap_err().field(),
        "token_ratio"
    );
    assert_eq!(
        TokenBucketBudget::grpc_builder(10, 0.1)
            .retry_cost(3)
            .build()
            .unwrap_err()
            .field(),
        "retry_cost"
    );
    assert_eq!(
        TokenBucketBudget::aws_builder()
            .max_tokens(4)
            .build()
            .unwrap_err()
            .field(),
        "retry_cost"
    );
    assert_eq!(
        ConcurrencyBudget::builder()
            .ratio(1e9)
            .build()
            .unwrap_err()
            .field(),
        "ratio"
    );
    assert_eq!(
        RatioBudget::builder()
            .ttl(Duration::from_secs(61))
            .build()
            .unwrap_err()
            .field(),
        "ttl"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Through the layer: whatever fails, and whenever, the retries sent
    /// never exceed `ratio × requests` (no reserve, all within one TTL).
    #[test]
    fn retries_through_the_layer_never_exceed_the_ratio(
        ratio_pct in 0u32..=100,
        failures in prop::collection::vec(0u32..4, 1..60),
    ) {
        let rt = paused_runtime();
        rt.block_on(async {
            let ratio = f64::from(ratio_pct) / 100.0;
            let budget = ratio_only(ratio);
            let layer = RetryLayer::builder()
                .policy(any_policy())
                .max_attempts(5)
                .budget(budget)
                .build()
                .unwrap();
            let h = layer.handle();
            let sent = Arc::new(AtomicU32::new(0));
            for (i, fail_first) in failures.iter().enumerate() {
                // The request's first `fail_first` attempts fail.
                let left = Arc::new(AtomicU32::new(*fail_first));
                let counter = sent.clone();
                let svc = service_fn(move |_: Req| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    let fail = left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok();
                    async move {
                        if fail { Err::<Res, BoxError>("down".into()) } else { Ok(Res::ok()) }
                    }
                });
                let mut svc = layer.layer(svc);
                let _ = svc.ready().await.unwrap().call(Req::new(i as u32)).await;
                let snap = h.snapshot();
                let requests = i as u64 + 1;
                let limit = (requests * u64::from(ratio_pct)) / 100;
                prop_assert!(snap.retries <= limit, "{} retries for {} requests at {}", snap.retries, requests, ratio);
                prop_assert_eq!(u64::from(sent.load(Ordering::Relaxed)), snap.attempts);
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}
