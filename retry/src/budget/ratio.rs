//! [`RatioBudget`]: Finagle's retry budget with exact fractional ratios.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use watertight_core::config;

use super::{check_ratio, remaining_gauge, Budget, Cause, Withdrawal};
use crate::error::{invalid, ConfigError, COMPONENT};

pub(super) const DEFAULT_RATIO: f64 = 0.2;
pub(super) const DEFAULT_MIN_PER_SEC: u32 = 10;
pub(super) const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// Units of one retry: ratios are exact to six decimals.
const SCALE: i64 = 1_000_000;
const SLOTS: usize = 10;
/// Deposits read the clock once per this many.
const SAMPLE_EVERY: u64 = 8;
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(60);

#[cfg(feature = "serde")]
pub(super) fn default_ratio() -> f64 {
    DEFAULT_RATIO
}

#[cfg(feature = "serde")]
pub(super) fn default_min_per_sec() -> u32 {
    DEFAULT_MIN_PER_SEC
}

#[cfg(feature = "serde")]
pub(super) fn default_ttl() -> Duration {
    DEFAULT_TTL
}

pub(super) fn validate(ratio: f64, ttl: Duration) -> Result<(), ConfigError> {
    check_ratio("ratio", ratio)?;
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(invalid(
            "ttl",
            format!("must be between 1s and 60s, got {ttl:?}"),
        ));
    }
    Ok(())
}

/// Finagle's retry budget: retries up to a ratio of recent requests, plus a
/// floor per second, with exact fractional ratios.
///
/// Every request deposits `ratio` of a retry; a retry withdraws one whole
/// retry; deposits and withdrawals count for `ttl` (kept in ten slots of
/// `ttl / 10`, rotated as time passes), and `min_per_sec × ttl` retries are
/// always available on top. So over the slots alive at any moment,
///
/// ```text
/// retries ≤ ratio × requests + min_per_sec × ttl
/// ```
///
/// This is Finagle's `RetryBudget` (defaults 20%, 10 retries/s, 10 s TTL),
/// which tower ports as `TpsBudget`. tower turns the ratio into a whole
/// number of deposits per retry, `(1 / ratio) as isize`, so any ratio above
/// 0.5 becomes one retry per request: a ratio of 0.6 allows 100% retries
/// ([tower#857]). Here deposits and withdrawals are counted in millionths of
/// a retry, so a ratio with up to six decimals is exact: 0.6 allows 60
/// retries per 100 requests, never 61.
///
/// A deposit is one atomic add; it reads the clock only once every eight
/// deposits, and is counted in the slot of the latest reading, at most seven
/// requests old. So a deposit may expire up to one slot early, never late:
/// the budget may be stricter than the formula around a slot boundary, by at
/// most `7 × ratio` retries, and is never looser. Withdrawals, which only
/// failures make, read the clock every time and take a lock so that two
/// concurrent retries cannot both spend the last unit.
///
/// [tower#857]: https://github.com/tower-rs/tower/issues/857
///
/// ```
/// use watertight_retry::budget::{Budget, Cause, RatioBudget};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let budget = RatioBudget::builder().ratio(0.6).min_per_sec(0).build().unwrap();
/// for _ in 0..100 {
///     budget.deposit();
/// }
/// let granted = (0..100).filter(|_| budget.withdraw(Cause::Retry).is_some()).count();
/// assert_eq!(granted, 60);
/// # }
/// ```
///
/// # Clone
///
/// Not `Clone`: a budget is shared through the `Arc` the layers hold, or
/// one you pass them.
pub struct RatioBudget {
    name: Arc<str>,
    ratio: f64,
    min_per_sec: u32,
    ttl: Duration,
    /// Units a request deposits: `ratio × SCALE`.
    deposit: i64,
    /// Units always available: `min_per_sec × ttl × SCALE`.
    reserve: i64,
    origin: Instant,
    slot_nanos: u64,
    /// The slot (counted from `origin`) deposits currently go to.
    epoch: AtomicU64,
    /// When that slot ends, in nanoseconds since `origin`: deposits compare
    /// with it and divide only when a slot ends.
    slot_end: AtomicU64,
    slots: [AtomicI64; SLOTS],
    /// Deposits so far, to read the clock on every eighth. Counted with a
    /// plain load and store: a lost count under contention only shifts when
    /// the clock is read.
    deposits: AtomicU64,
    /// Serialises rotations and withdrawals.
    lock: Mutex<()>,
    gauge: metrics::Gauge,
}

impl RatioBudget {
    /// A budget with Finagle's defaults: 20% of requests over 10 s plus 10
    /// retries per second, named `retry`.
    pub fn new() -> Self {
        RatioBudget::builder()
            .build()
            .expect("the defaults are valid")
    }

    /// A builder starting from the defaults.
    pub fn builder() -> RatioBudgetBuilder {
        RatioBudgetBuilder {
            name: "retry".to_owned(),
            ratio: DEFAULT_RATIO,
            min_per_sec: DEFAULT_MIN_PER_SEC,
            ttl: DEFAULT_TTL,
        }
    }

    /// The name (the `name` label of its gauge).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Retries per request.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Retries per second always allowed.
    pub fn min_per_sec(&self) -> u32 {
        self.min_per_sec
    }

    /// How long a request or a retry counts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    #[inline]
    fn elapsed(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.origin);
        d.as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()))
    }

    /// Moves to the slot holding `elapsed`, clearing the slots that expired.
    /// Call with the lock held.
    fn rotate_locked(&self, elapsed: u64) {
        let k = elapsed / self.slot_nanos;
        let e = self.epoch.load(Ordering::Acquire);
        if k <= e {
            return;
        }
        let expired = (k - e).min(SLOTS as u64);
        for i in 1..=expired {
            self.slots[((e + i) % SLOTS as u64) as usize].store(0, Ordering::Relaxed);
        }
        self.epoch.store(k, Ordering::Release);
        self.slot_end.store(
            k.saturating_add(1).saturating_mul(self.slot_nanos),
            Ordering::Release,
        );
    }

    /// The current slot, rotating first if `now` is past its end.
    #[inline]
    fn current_slot(&self, now: Instant) -> u64 {
        let elapsed = self.elapsed(now);
        if elapsed >= self.slot_end.load(Ordering::Acquire) {
            let _guard = self.lock.lock();
            self.rotate_locked(elapsed);
            self.gauge.set(self.remaining_units() as f64);
        }
        self.epoch.load(Ordering::Acquire)
    }

    fn balance(&self) -> i64 {
        self.slots
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .fold(self.reserve, i64::saturating_add)
    }

    fn remaining_units(&self) -> u64 {
        (self.balance().max(0) / SCALE) as u64
    }
}

impl Default for RatioBudget {
    fn default() -> Self {
        RatioBudget::new()
    }
}

impl Budget for RatioBudget {
    #[inline]
    fn deposit(&self) {
        let n = self.deposits.load(Ordering::Relaxed);
        self.deposits.store(n.wrapping_add(1), Ordering::Relaxed);
        let slot = if n.is_multiple_of(SAMPLE_EVERY) {
            self.current_slot(Instant::now())
        } else {
            self.epoch.load(Ordering::Acquire)
        };
        self.slots[(slot % SLOTS as u64) as usize].fetch_add(self.deposit, Ordering::Relaxed);
    }

    fn withdraw(&self, _cause: Cause) -> Option<Withdrawal> {
        let elapsed = self.elapsed(Instant::now());
        let _guard = self.lock.lock();
        self.rotate_locked(elapsed);
        let slot = self.epoch.load(Ordering::Acquire);
        let granted = self.balance() >= SCALE;
        if granted {
            self.slots[(slot % SLOTS as u64) as usize].fetch_sub(SCALE, Ordering::Relaxed);
        }
        self.gauge.set(self.remaining_units() as f64);
        granted.then_some(Withdrawal::new(1))
    }

    fn remaining(&self) -> u64 {
        self.current_slot(Instant::now());
        self.remaining_units()
    }
}

impl fmt::Debug for RatioBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RatioBudget")
            .field("name", &self.name)
            .field("ratio", &self.ratio)
            .field("min_per_sec", &self.min_per_sec)
            .field("ttl", &self.ttl)
            .field("remaining", &self.remaining_units())
            .finish()
    }
}

/// Builds a [`RatioBudget`].
#[derive(Clone, Debug)]
pub struct RatioBudgetBuilder {
    name: String,
    ratio: f64,
    min_per_sec: u32,
    ttl: Duration,
}

impl RatioBudgetBuilder {
    /// The `name` label of the gauge (default `retry`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Retries allowed per request, `0..=1000` (default 0.2: one retry per
    /// five requests). Exact to six decimals.
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Retries per second allowed whatever the traffic (default 10), so a
    /// client with few requests can still retry.
    pub fn min_per_sec(mut self, min_per_sec: u32) -> Self {
        self.min_per_sec = min_per_sec;
        self
    }

    /// How long a request's deposit and a retry's withdrawal count, `1s..=60s`
    /// (default 10 s; Finagle's bounds).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Validates and builds the budget.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `name` (empty), `ratio` (outside
    /// `0..=1000` or not finite) or `ttl` (outside `1s..=60s`).
    pub fn build(self) -> Result<RatioBudget, ConfigError> {
        config::name(COMPONENT, &self.name)?;
        validate(self.ratio, self.ttl)?;
        let deposit = (self.ratio * SCALE as f64).round() as i64;
        // min_per_sec × ttl retries, in units: ttl in nanoseconds × SCALE / 1e9.
        let reserve = i128::from(self.min_per_sec) * self.ttl.as_nanos() as i128 / 1_000;
        let reserve = reserve.min(i128::from(i64::MAX / 4)) as i64;
        let gauge = remaining_gauge(&self.name);
        let slot_nanos = (self.ttl.as_nanos() / SLOTS as u128).max(1) as u64;
        let budget = RatioBudget {
            name: self.name.into(),
            ratio: self.ratio,
            min_per_sec: self.min_per_sec,
            ttl: self.ttl,
            deposit,
            reserve,
            origin: Instant::now(),
            slot_nanos,
            epoch: AtomicU64::new(0),
            slot_end: AtomicU64::new(slot_nanos),
            deposits: AtomicU64::new(0),
            slots: Default::default(),
            lock: Mutex::new(()),
            gauge,
        };
        budget.gauge.set(budget.remaining_units() as f64);
        Ok(budget)
    }
}
