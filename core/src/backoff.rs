//! Backoff: how long to wait before the next attempt.
//!
//! | kind | delay before retry `n` (0-based) |
//! |---|---|
//! | [`Constant`](Backoff::constant) | `base` |
//! | [`Linear`](Backoff::linear) | `min(max, base·(n+1))` |
//! | [`Exponential`](Backoff::exponential) | `min(max, base·2ⁿ)`, no jitter |
//! | [`FullJitter`](Backoff::full_jitter) (the default) | `U[0, min(max, base·2ⁿ))` |
//! | [`EqualJitter`](Backoff::equal_jitter) | `c/2 + U[0, c/2]` where `c = min(max, base·2ⁿ)` |
//! | [`DecorrelatedJitter`](Backoff::decorrelated_jitter) | `U[base, min(max, 3·prev)]`, `prev` starting at `base` |
//!
//! The jittered kinds are those of the AWS Architecture Blog's "Exponential
//! Backoff And Jitter". The ceiling is capped at `max` *before* jittering, so
//! jitter never disappears at the cap: resilience4j and Finagle cap after
//! jittering, and every client that reaches the cap then retries in lockstep.
//!
//! A [`Backoff`] is configuration; a [`Sequence`] walks it for one series of
//! attempts (one request's retries, one breaker's repeated trips) with an
//! injected RNG, so delays are deterministic for a seed.

use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::fmt;
use std::time::Duration;

/// Which formula a [`Backoff`] follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum BackoffKind {
    /// Always `base`.
    Constant,
    /// `min(max, base·(n+1))`.
    Linear,
    /// `min(max, base·2ⁿ)`, no jitter.
    Exponential,
    /// `U[0, min(max, base·2ⁿ))`.
    FullJitter,
    /// `c/2 + U[0, c/2]`, `c = min(max, base·2ⁿ)`.
    EqualJitter,
    /// `U[base, min(max, 3·prev)]`.
    DecorrelatedJitter,
}

/// A validated backoff configuration. See the [module docs](self).
///
/// With feature `serde` it deserializes from
/// `{ kind = "full_jitter", base = "25ms", max = "250ms" }` (`max` may be left
/// out for `constant`), and invalid values are an error naming the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(try_from = "BackoffConfig", into = "BackoffConfig")
)]
pub struct Backoff {
    kind: BackoffKind,
    base: Duration,
    max: Duration,
}

/// The error of an invalid [`Backoff`] configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidBackoff {
    field: &'static str,
    reason: &'static str,
}

impl InvalidBackoff {
    /// The configuration field at fault (`base` or `max`).
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for InvalidBackoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid backoff: `{}` {}", self.field, self.reason)
    }
}

impl std::error::Error for InvalidBackoff {}

impl Default for Backoff {
    /// Full jitter from 25 ms to 250 ms, Envoy's retry backoff.
    fn default() -> Self {
        Backoff {
            kind: BackoffKind::FullJitter,
            base: Duration::from_millis(25),
            max: Duration::from_millis(250),
        }
    }
}

impl Backoff {
    /// A backoff of `kind` from `base` up to `max`.
    ///
    /// # Errors
    ///
    /// [`InvalidBackoff`] when `base` is zero or `base > max`.
    pub fn new(kind: BackoffKind, base: Duration, max: Duration) -> Result<Self, InvalidBackoff> {
        if base.is_zero() {
            return Err(InvalidBackoff {
                field: "base",
                reason: "must be greater than zero",
            });
        }
        if base > max {
            return Err(InvalidBackoff {
                field: "max",
                reason: "must not be less than `base`",
            });
        }
        Ok(Backoff { kind, base, max })
    }

    /// Always `delay`.
    ///
    /// # Errors
    ///
    /// [`InvalidBackoff`] when `delay` is zero.
    pub fn constant(delay: Duration) -> Result<Self, InvalidBackoff> {
        Self::new(BackoffKind::Constant, delay, delay)
    }

    /// `min(max, base·(n+1))`. See [`Backoff::new`] for errors.
    pub fn linear(base: Duration, max: Duration) -> Result<Self, InvalidBackoff> {
        Self::new(BackoffKind::Linear, base, max)
    }

    /// `min(max, base·2ⁿ)`. See [`Backoff::new`] for errors.
    pub fn exponential(base: Duration, max: Duration) -> Result<Self, InvalidBackoff> {
        Self::new(BackoffKind::Exponential, base, max)
    }

    /// `U[0, min(max, base·2ⁿ))`. See [`Backoff::new`] for errors.
    pub fn full_jitter(base: Duration, max: Duration) -> Result<Self, InvalidBackoff> {
        Self::new(BackoffKind::FullJitter, base, max)
    }

    /// `c/2 + U[0, c/2]`, `c = min(max, base·2ⁿ)`. See [`Backoff::new`] for errors.
    pub fn equal_jitter(base: Duration, max: Duration) -> Result<Self, InvalidBackoff> {
        Self::new(BackoffKind::EqualJitter, base, max)
    }

    /// `U[base, min(max, 3·prev)]`. See [`Backoff::new`] for errors.
    pub fn decorrelated_jitter(base: Duration, max: Duration) -> Result<Self, InvalidBackoff> {
        Self::new(BackoffKind::DecorrelatedJitter, base, max)
    }

    /// The formula.
    pub fn kind(&self) -> BackoffKind {
        self.kind
    }

    /// The smallest step.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The un-jittered ceiling of retry `n`: `base·(n+1)` for linear,
    /// `base·2ⁿ` otherwise, capped at `max`.
    pub fn ceiling(&self, n: u32) -> Duration {
        let base = self.base.as_nanos();
        let max = self.max.as_nanos();
        let raw = match self.kind {
            BackoffKind::Constant => base,
            BackoffKind::Linear => base.saturating_mul(u128::from(n) + 1),
            _ if n >= 100 => max,
            _ => base.saturating_mul(1u128 << n),
        };
        nanos(raw.min(max))
    }

    /// The delay before retry `n` (0-based), given the previous delay (only
    /// decorrelated jitter reads it; pass `base` first).
    pub fn delay<R: Rng + ?Sized>(&self, n: u32, prev: Duration, rng: &mut R) -> Duration {
        match self.kind {
            BackoffKind::Constant | BackoffKind::Linear | BackoffKind::Exponential => {
                self.ceiling(n)
            }
            BackoffKind::FullJitter => {
                let c = self.ceiling(n).as_nanos();
                nanos(rng.random_range(0..c))
            }
            BackoffKind::EqualJitter => {
                let c = self.ceiling(n).as_nanos();
                let half = c / 2;
                nanos(half + rng.random_range(0..=c - half))
            }
            BackoffKind::DecorrelatedJitter => {
                let lo = self.base.as_nanos();
                let hi = prev
                    .as_nanos()
                    .saturating_mul(3)
                    .min(self.max.as_nanos())
                    .max(lo);
                nanos(rng.random_range(lo..=hi))
            }
        }
    }

    /// Walks this backoff with an RNG seeded from entropy.
    pub fn sequence(&self) -> Sequence {
        self.sequence_with_rng(SmallRng::from_rng(&mut rand::rng()))
    }

    /// Walks this backoff with an RNG seeded with `seed`: the same seed gives
    /// the same delays.
    pub fn sequence_seeded(&self, seed: u64) -> Sequence {
        self.sequence_with_rng(SmallRng::seed_from_u64(seed))
    }

    /// Walks this backoff with the given RNG.
    pub fn sequence_with_rng(&self, rng: SmallRng) -> Sequence {
        Sequence {
            backoff: *self,
            attempt: 0,
            prev: self.base,
            rng,
        }
    }
}

fn nanos(n: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = (n / NANOS_PER_SEC).min(u128::from(u64::MAX)) as u64;
    Duration::new(secs, (n % NANOS_PER_SEC) as u32)
}

/// One series of delays from a [`Backoff`].
///
/// ```
/// use std::time::Duration;
/// use watertight_core::Backoff;
///
/// let b = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1)).unwrap();
/// let mut seq = b.sequence_seeded(7);
/// let delays: Vec<_> = (0..6).map(|_| seq.next_delay().as_millis()).collect();
/// assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
/// seq.reset();
/// assert_eq!(seq.next_delay(), Duration::from_millis(100));
/// ```
#[derive(Clone, Debug)]
pub struct Sequence {
    backoff: Backoff,
    attempt: u32,
    prev: Duration,
    rng: SmallRng,
}

impl Sequence {
    /// The next delay; advances the sequence.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.backoff.delay(self.attempt, self.prev, &mut self.rng);
        self.attempt = self.attempt.saturating_add(1);
        self.prev = d;
        d
    }

    /// How many delays this sequence has given since it started or was reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Starts over from the first delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.prev = self.backoff.base;
    }

    /// The configuration this sequence walks.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }
}

impl Iterator for Sequence {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_delay())
    }
}

#[cfg(feature = "serde")]
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct BackoffConfig {
    kind: BackoffKind,
    #[serde(with = "humantime_serde")]
    base: Duration,
    #[serde(
        with = "humantime_serde",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    max: Option<Duration>,
}

#[cfg(feature = "serde")]
impl TryFrom<BackoffConfig> for Backoff {
    type Error = InvalidBackoff;

    fn try_from(c: BackoffConfig) -> Result<Self, InvalidBackoff> {
        let max = match (c.kind, c.max) {
            (_, Some(max)) => max,
            (BackoffKind::Constant, None) => c.base,
            (_, None) => {
                return Err(InvalidBackoff {
                    field: "max",
                    reason: "is required",
                })
            }
        };
        Backoff::new(c.kind, c.base, max)
    }
}

#[cfg(feature = "serde")]
impl From<Backoff> for BackoffConfig {
    fn from(b: Backoff) -> Self {
        BackoffConfig {
            kind: b.kind,
            base: b.base,
            max: Some(b.max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn invalid_configuration_names_the_field() {
        let e = Backoff::full_jitter(Duration::ZERO, MS).unwrap_err();
        assert_eq!(e.field(), "base");
        assert_eq!(
            e.to_string(),
            "invalid backoff: `base` must be greater than zero"
        );
        let e = Backoff::linear(MS * 10, MS).unwrap_err();
        assert_eq!(e.field(), "max");
    }

    #[test]
    fn linear_and_constant() {
        let b = Backoff::linear(MS * 10, MS * 35).unwrap();
        let got: Vec<_> = b.sequence_seeded(0).take(5).collect();
        assert_eq!(got, [MS * 10, MS * 20, MS * 30, MS * 35, MS * 35]);
        let c = Backoff::constant(MS * 3).unwrap();
        assert!(c.sequence_seeded(1).take(50).all(|d| d == MS * 3));
    }

    #[test]
    fn huge_exponents_saturate_at_max() {
        let b = Backoff::exponential(Duration::from_secs(1), Duration::MAX).unwrap();
        assert_eq!(b.ceiling(10_000), Duration::MAX);
        assert_eq!(b.ceiling(3), Duration::from_secs(8));
    }

    #[test]
    fn same_seed_same_delays() {
        let b = Backoff::decorrelated_jitter(MS, MS * 1000).unwrap();
        let a: Vec<_> = b.sequence_seeded(42).take(20).collect();
        let c: Vec<_> = b.sequence_seeded(42).take(20).collect();
        assert_eq!(a, c);
    }

    fn kinds() -> impl Strategy<Value = BackoffKind> {
        prop_oneof![
            Just(BackoffKind::Constant),
            Just(BackoffKind::Linear),
            Just(BackoffKind::Exponential),
            Just(BackoffKind::FullJitter),
            Just(BackoffKind::EqualJitter),
            Just(BackoffKind::DecorrelatedJitter),
        ]
    }

    proptest! {
        #[test]
        fn every_delay_stays_within_documented_bounds(
            kind in kinds(),
            base_us in 1u64..1_000_000,
            extra_us in 0u64..10_000_000,
            seed in any::<u64>(),
            steps in 1usize..40,
        ) {
            let base = Duration::from_micros(base_us);
            let max = base + Duration::from_micros(extra_us);
            let b = Backoff::new(kind, base, if kind == BackoffKind::Constant { base } else { max }).unwrap();
            let mut seq = b.sequence_seeded(seed);
            let mut prev = base;
            for n in 0..steps as u32 {
                let d = seq.next_delay();
                let c = b.ceiling(n);
                prop_assert!(c <= b.max());
                match kind {
                    BackoffKind::Constant => prop_assert_eq!(d, base),
                    BackoffKind::Linear | BackoffKind::Exponential => prop_assert_eq!(d, c),
                    BackoffKind::FullJitter => prop_assert!(d < c),
                    BackoffKind::EqualJitter => prop_assert!(d >= c / 2 && d <= c),
                    BackoffKind::DecorrelatedJitter => {
                        prop_assert!(d >= base);
                        prop_assert!(d <= (prev * 3).min(b.max()).max(base));
                    }
                }
                prev = d;
            }
        }

        /// At the cap the delays still spread over the documented range.
        #[test]
        fn jitter_survives_at_the_cap(kind in prop_oneof![
            Just(BackoffKind::FullJitter),
            Just(BackoffKind::EqualJitter),
            Just(BackoffKind::DecorrelatedJitter),
        ], seed in any::<u64>()) {
            let b = Backoff::new(kind, MS, MS * 100).unwrap();
            // Far past the cap: 2^30 ms is well beyond 100 ms.
            let delays: Vec<_> = b.sequence_seeded(seed).skip(30).take(200).collect();
            let lo = *delays.iter().min().unwrap();
            let hi = *delays.iter().max().unwrap();
            prop_assert!(hi <= MS * 100);
            // 200 draws from a range at least 50 ms wide spread over 20 ms.
            prop_assert!(hi - lo > MS * 20, "no jitter at the cap: {:?}..{:?}", lo, hi);
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn deserializes_and_validates() {
        let b: Backoff =
            serde_json::from_str(r#"{"kind":"equal_jitter","base":"5s","max":"300s"}"#).unwrap();
        assert_eq!(
            b,
            Backoff::equal_jitter(Duration::from_secs(5), Duration::from_secs(300)).unwrap()
        );
        let c: Backoff = serde_json::from_str(r#"{"kind":"constant","base":"1s"}"#).unwrap();
        assert_eq!(c.max(), Duration::from_secs(1));
        let e = serde_json::from_str::<Backoff>(r#"{"kind":"linear","base":"2s","max":"1s"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("`max`"), "{e}");
        let e = serde_json::from_str::<Backoff>(r#"{"kind":"linear","base":"0s","max":"1s"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("`base`"), "{e}");
    }
}
