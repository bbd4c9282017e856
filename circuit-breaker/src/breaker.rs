//! The state machine every service, handle and future of one breaker shares.
//!
//! # The hot path
//!
//! One `AtomicU64` holds the state and a generation bumped by every
//! transition. A call in `Closed` loads it once to be admitted and once when
//! its result arrives; the result is recorded only if the word is unchanged,
//! so results of calls admitted before a transition (late results) never
//! count towards, or flip, a later state. Recording a fast success is then
//! the core window's two relaxed read-modify-writes and a load of the
//! consecutive-failure counter: once a count window holds `minimum_calls`,
//! a fast success can only lower the rates, so they are not read. The clock
//! is read only when the slow-call policy or a time window needs it.
//!
//! Transitions take a mutex, re-check the word under it (so of two callers
//! racing to trip, one does), and publish the new word last.
//!
//! # Sources
//!
//! Failure-rate and slow-call-rate policies, minimum calls and the `>=`
//! comparison are resilience4j's `CircuitBreaker` semantics; consecutive
//! failures are Finagle's/linkerd's failure accrual; growing open durations
//! are Finagle's failure-accrual backoff; half-open probe limits and
//! `max_half_open_duration` follow resilience4j's half-open state, with
//! probe permits released on drop.

use std::fmt;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use metrics::{Counter, Gauge, Label};
use parking_lot::Mutex;
use tokio::time::Instant;
use tracing::field;
use watertight_core::backoff::Sequence;
use watertight_core::window::{CountWindow, Outcome, Snapshot as WindowSnapshot, TimeWindow};
use watertight_core::ResponseClass;

use crate::config::{Config, Mode, Window};
use crate::error::Open;
use crate::event::{Cause, Event, Listener, Policy, Rejected, Transition, TripRefused, Tripped};
use crate::group::BreakerGroup;
use crate::handle::Snapshot;
use crate::probe::{Permit, ProbeGate};
use crate::state::{generation_of, is_recording, pack, state_of, State};
use crate::sync::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};

pub(crate) const TARGET: &str = "watertight_circuit_breaker";

/// What a breaker decided about one call.
#[derive(Debug)]
pub(crate) enum Admission {
    /// `Disabled`: pass, record nothing.
    Pass,
    /// `Closed` or `MetricsOnly`, in the generation of this word.
    Admit(u64),
    /// `HalfOpen`: a probe holding this permit.
    Probe(Permit),
    /// Rejected.
    Reject(Open),
}

enum Outcomes {
    None,
    Count(CountWindow),
    Time(TimeWindow),
}

/// The state behind the transition lock.
struct Control {
    backoff: Sequence,
    trips: u64,
    /// Whether this breaker holds one of its group's open slots (it is
    /// `Open` or `HalfOpen` after a trip).
    holds_slot: bool,
}

struct Metrics {
    state: Gauge,
    success: Counter,
    failure: Counter,
    slow_success: Counter,
    slow_failure: Counter,
    ignored: Counter,
    rejected: Counter,
    trips_refused: Counter,
    labels: Vec<Label>,
}

impl Metrics {
    fn new(name: &str, key: Option<&str>) -> Self {
        let mut labels = vec![Label::new("name", name.to_owned())];
        if let Some(k) = key {
            labels.push(Label::new("key", k.to_owned()));
        }
        let calls = |outcome: &'static str| {
            let mut l = labels.clone();
            l.push(Label::new("outcome", outcome));
            metrics::counter!("watertight_circuit_breaker_calls_total", l)
        };
        Metrics {
            state: metrics::gauge!("watertight_circuit_breaker_state", labels.clone()),
            success: calls("success"),
            failure: calls("failure"),
            slow_success: calls("slow_success"),
            slow_failure: calls("slow_failure"),
            ignored: calls("ignored"),
            rejected: metrics::counter!(
                "watertight_circuit_breaker_rejected_total",
                labels.clone()
            ),
            trips_refused: metrics::counter!(
                "watertight_circuit_breaker_trips_refused_total",
                labels.clone()
            ),
            labels,
        }
    }

    fn transition(&self, from: State, to: State) {
        let mut l = self.labels.clone();
        l.push(Label::new("from", from.as_str()));
        l.push(Label::new("to", to.as_str()));
        metrics::counter!("watertight_circuit_breaker_transitions_total", l).increment(1);
        self.state.set(f64::from(to.code()));
    }
}

/// One circuit breaker. See the [module docs](self).
pub(crate) struct Breaker {
    word: AtomicU64,
    consecutive: AtomicU32,
    outcomes: Outcomes,
    failure_rate: Option<f64>,
    slow: Option<(Duration, f64)>,
    consecutive_limit: Option<u32>,
    minimum_calls: u64,
    /// Whether the count window has held `minimum_calls` since it was last
    /// cleared (a count window only fills up).
    warm: AtomicBool,
    /// Whether a call's start time is needed (the slow-call policy).
    timed: bool,
    gate: Arc<ProbeGate>,
    success_threshold: u16,
    max_half_open: Option<Duration>,
    pub(crate) mode: Mode,
    epoch: Instant,
    /// Nanoseconds after `epoch` when `Open` admits its first probe.
    open_until: AtomicU64,
    /// Nanoseconds after `epoch` when a busy `HalfOpen` reopens.
    half_open_until: AtomicU64,
    control: Mutex<Control>,
    waiters: Mutex<Vec<Waker>>,
    rejected: AtomicU64,
    late: AtomicU64,
    transitions: AtomicU64,
    metrics: Metrics,
    pub(crate) name: Arc<str>,
    pub(crate) key: Option<Arc<str>>,
    listener: Option<Listener>,
    group: Option<BreakerGroup>,
}

impl Drop for Breaker {
    fn drop(&mut self) {
        if let Some(g) = &self.group {
            if self.control.get_mut().holds_slot {
                g.closed();
            }
            g.leave();
        }
    }
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

impl Breaker {
    /// A closed breaker from a validated `config`, a member of `group`.
    pub(crate) fn new(
        config: &Config,
        listener: Option<Listener>,
        key: Option<Arc<str>>,
        group: Option<BreakerGroup>,
    ) -> Self {
        let now = Instant::now();
        let outcomes = if !config.uses_window() {
            Outcomes::None
        } else {
            match config.window {
                Window::Count { size } => Outcomes::Count(CountWindow::new(size)),
                Window::Time { duration, buckets } => {
                    Outcomes::Time(TimeWindow::new(duration, buckets, now))
                }
            }
        };
        let minimum_calls = match config.window {
            Window::Count { size } => config.minimum_calls.min(size as u64),
            Window::Time { .. } => config.minimum_calls,
        };
        let backoff = match config.seed {
            Some(seed) => config.open_backoff.sequence_seeded(seed),
            None => config.open_backoff.sequence(),
        };
        let name: Arc<str> = Arc::from(config.name.as_str());
        let metrics = Metrics::new(&name, key.as_deref());
        metrics.state.set(f64::from(State::Closed.code()));
        if let Some(g) = &group {
            g.join();
        }
        Breaker {
            word: AtomicU64::new(pack(State::Closed, 0)),
            consecutive: AtomicU32::new(0),
            outcomes,
            failure_rate: config.failure_rate_threshold,
            slow: config
                .slow_call_duration
                .map(|d| (d, config.slow_call_rate_threshold)),
            consecutive_limit: config.consecutive_failures,
            minimum_calls,
            warm: AtomicBool::new(false),
            timed: config.slow_call_duration.is_some(),
            gate: Arc::new(ProbeGate::new(config.permitted_probes as u16)),
            success_threshold: config.success_threshold as u16,
            max_half_open: config.max_half_open_duration,
            mode: config.mode,
            epoch: now,
            open_until: AtomicU64::new(0),
            half_open_until: AtomicU64::new(u64::MAX),
            control: Mutex::new(Control {
                backoff,
                trips: 0,
                holds_slot: false,
            }),
            waiters: Mutex::new(Vec::new()),
            rejected: AtomicU64::new(0),
            late: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
            metrics,
            name,
            key,
            listener,
            group,
        }
    }

    pub(crate) fn state(&self) -> State {
        state_of(self.word.load(Acquire))
    }

    fn at(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    fn since_epoch(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.epoch))
    }

    /// The start time a recorded call needs (nanoseconds after the epoch),
    /// or 0 when the slow-call policy is off and nothing reads it.
    #[inline]
    pub(crate) fn start(&self) -> u64 {
        if self.timed {
            self.since_epoch(Instant::now())
        } else {
            0
        }
    }

    /// Whether a call would pass without taking anything: `Closed`,
    /// `MetricsOnly` or `Disabled`. One load.
    #[inline]
    pub(crate) fn admits_freely(&self) -> bool {
        let word = self.word.load(Acquire);
        is_recording(word) || state_of(word) == State::Disabled
    }

    /// Decides about one call. Rejections are not counted here: the caller
    /// counts them with [`Breaker::count_rejection`] when it fails a call.
    #[inline]
    pub(crate) fn admit(&self) -> Admission {
        let word = self.word.load(Acquire);
        if is_recording(word) {
            return Admission::Admit(word);
        }
        self.admit_slow(word)
    }

    #[cold]
    fn admit_slow(&self, mut word: u64) -> Admission {
        loop {
            match state_of(word) {
                State::Closed | State::MetricsOnly => return Admission::Admit(word),
                State::Disabled => return Admission::Pass,
                State::ForcedOpen => {
                    return Admission::Reject(Open::new(State::ForcedOpen, Duration::MAX))
                }
                State::Open => {
                    let now = Instant::now();
                    let until = self.at(self.open_until.load(Acquire));
                    if now < until {
                        return Admission::Reject(Open::new(State::Open, until - now));
                    }
                    self.transition(Some(word), State::HalfOpen, Cause::OpenElapsed, now);
                }
                State::HalfOpen => {
                    if let Some(p) = self.gate.acquire(generation_of(word)) {
                        return Admission::Probe(p);
                    }
                    // The gate may belong to a newer period already.
                    let cur = self.word.load(Acquire);
                    if cur != word {
                        word = cur;
                        continue;
                    }
                    let now = Instant::now();
                    let until = self.at(self.half_open_until.load(Acquire));
                    if now < until {
                        return Admission::Reject(Open::new(State::HalfOpen, Duration::ZERO));
                    }
                    self.transition(Some(word), State::Open, Cause::HalfOpenTimedOut, now);
                }
            }
            word = self.word.load(Acquire);
        }
    }

    /// Counts a call the breaker failed with `open`.
    pub(crate) fn count_rejection(&self, open: &Open) {
        self.rejected.fetch_add(1, Relaxed);
        self.metrics.rejected.increment(1);
        if let Some(l) = &self.listener {
            l(&Event::Rejected(Rejected {
                name: self.name.clone(),
                key: self.key.clone(),
                state: open.state(),
                retry_after: open.retry_after(),
            }));
        }
    }

    /// When a rejecting breaker may admit again, for `Backpressure`: the
    /// open deadline, or the half-open deadline while every permit is
    /// taken. `None` when only a handle or a returning permit can change
    /// that.
    pub(crate) fn wake_at(&self, rejected_by: State) -> Option<Instant> {
        match rejected_by {
            State::Open => Some(self.at(self.open_until.load(Acquire))),
            State::HalfOpen => {
                let n = self.half_open_until.load(Acquire);
                (n != u64::MAX).then(|| self.at(n))
            }
            _ => None,
        }
    }

    /// Wakes `waker` at the breaker's next transition or returned permit.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut w = self.waiters.lock();
        if !w.iter().any(|x| x.will_wake(waker)) {
            w.push(waker.clone());
        }
    }

    fn wake_all(&self) {
        let wakers = std::mem::take(&mut *self.waiters.lock());
        for w in wakers {
            w.wake();
        }
    }

    /// Records the result of a call admitted with `word` (`Closed` or
    /// `MetricsOnly`) and started at `start`.
    #[inline]
    pub(crate) fn complete(&self, word: u64, class: ResponseClass, start: u64) {
        let failed = match class {
            ResponseClass::Success => false,
            ResponseClass::Failure { .. } => true,
            ResponseClass::Ignored => {
                self.metrics.ignored.increment(1);
                return;
            }
        };
        let needs_now = self.timed || matches!(self.outcomes, Outcomes::Time(_));
        let now = if needs_now {
            Some(Instant::now())
        } else {
            None
        };
        let slow = match (self.slow, now) {
            (Some((limit, _)), Some(n)) => self.since_epoch(n).saturating_sub(start) > nanos(limit),
            _ => false,
        };
        let outcome = Outcome::new(failed, slow);
        match outcome {
            Outcome::Success => &self.metrics.success,
            Outcome::Failure => &self.metrics.failure,
            Outcome::SlowSuccess => &self.metrics.slow_success,
            Outcome::SlowFailure => &self.metrics.slow_failure,
        }
        .increment(1);
        if self.word.load(Acquire) != word {
            self.late.fetch_add(1, Relaxed);
            return;
        }
        let window = match &self.outcomes {
            Outcomes::None => None,
            Outcomes::Count(w) => {
                w.record(outcome);
                // A fast success in a count window that already holds the
                // minimum lowers or keeps both rates, so it cannot trip
                // what the call before it did not: skip the rates.
                if outcome == Outcome::Success && self.warm.load(Relaxed) {
                    None
                } else {
                    let s = w.snapshot();
                    if s.calls >= self.minimum_calls && !self.warm.load(Relaxed) {
                        self.warm.store(true, Relaxed);
                    }
                    Some(s)
                }
            }
            Outcomes::Time(w) => {
                let now = now.unwrap_or_else(Instant::now);
                w.record(now, outcome);
                Some(w.snapshot(now))
            }
        };
        let mut tripped = Tripped::empty();
        if failed {
            let n = self.consecutive.fetch_add(1, Relaxed).saturating_add(1);
            if matches!(self.consecutive_limit, Some(limit) if n >= limit) {
                tripped = tripped.with(Policy::ConsecutiveFailures);
            }
        } else if self.consecutive.load(Relaxed) != 0 {
            self.consecutive.store(0, Relaxed);
        }
        if let Some(s) = window {
            if s.calls >= self.minimum_calls {
                if matches!(self.failure_rate, Some(t) if s.failure_rate >= t) {
                    tripped = tripped.with(Policy::FailureRate);
                }
                if matches!(self.slow, Some((_, t)) if s.slow_rate >= t) {
                    tripped = tripped.with(Policy::SlowCallRate);
                }
            }
        }
        if !tripped.is_empty() && state_of(word) == State::Closed {
            self.trip(word, tripped, now);
        }
    }

    #[cold]
    fn trip(&self, word: u64, tripped: Tripped, now: Option<Instant>) {
        let now = now.unwrap_or_else(Instant::now);
        self.transition(Some(word), State::Open, Cause::Tripped(tripped), now);
    }

    /// Records the result of a probe holding a permit of `generation`,
    /// started at `start` (see [`Breaker::start`]). With the slow-call
    /// policy on, a probe slower than `slow_call_duration` fails the probe
    /// period even when it succeeded: one probe is the whole half-open
    /// sample, and resilience4j reopens a half-open breaker whose permitted
    /// calls reach the slow-call rate threshold.
    pub(crate) fn complete_probe(&self, generation: u64, class: ResponseClass, start: u64) {
        let slow = match self.slow {
            Some((limit, _)) if !matches!(class, ResponseClass::Ignored) => {
                self.since_epoch(Instant::now()).saturating_sub(start) > nanos(limit)
            }
            _ => false,
        };
        let counter = match (class, slow) {
            (ResponseClass::Success, false) => &self.metrics.success,
            (ResponseClass::Success, true) => &self.metrics.slow_success,
            (ResponseClass::Failure { .. }, false) => &self.metrics.failure,
            (ResponseClass::Failure { .. }, true) => &self.metrics.slow_failure,
            (ResponseClass::Ignored, _) => &self.metrics.ignored,
        };
        counter.increment(1);
        let word = pack(State::HalfOpen, generation);
        let class = match class {
            ResponseClass::Success if slow => ResponseClass::FATAL,
            c => c,
        };
        match class {
            ResponseClass::Success => match self.gate.release(generation, true) {
                Some(n) if n >= self.success_threshold => {
                    self.transition(
                        Some(word),
                        State::Closed,
                        Cause::ProbesSucceeded,
                        Instant::now(),
                    );
                }
                Some(_) => self.probe_returned(generation),
                None => {
                    self.late.fetch_add(1, Relaxed);
                }
            },
            ResponseClass::Failure { .. } => {
                if self.gate.release(generation, false).is_some() {
                    self.transition(Some(word), State::Open, Cause::ProbeFailed, Instant::now());
                } else {
                    self.late.fetch_add(1, Relaxed);
                }
            }
            ResponseClass::Ignored => {
                if self.gate.release(generation, false).is_some() {
                    self.probe_returned(generation);
                }
            }
        }
    }

    /// A probe of `generation` was dropped before its result (cancelled):
    /// its permit comes back and nothing is counted.
    pub(crate) fn probe_cancelled(&self, generation: u64) {
        if self.gate.release(generation, false).is_some() {
            self.probe_returned(generation);
        }
    }

    /// A probe of `generation` gave its permit back without deciding the
    /// period (a success below the threshold, an ignored result, a
    /// cancelled probe). The half-open deadline restarts, since it is there
    /// for probes that never come back, and a waiting service may take the
    /// permit.
    pub(crate) fn probe_returned(&self, generation: u64) {
        if let Some(d) = self.max_half_open {
            if self.word.load(Acquire) == pack(State::HalfOpen, generation) {
                let until = self.since_epoch(Instant::now()).saturating_add(nanos(d));
                self.half_open_until.store(until, Release);
            }
        }
        self.wake_all();
    }

    fn window_snapshot(&self, now: Instant) -> WindowSnapshot {
        match &self.outcomes {
            Outcomes::None => WindowSnapshot::default(),
            Outcomes::Count(w) => w.snapshot(),
            Outcomes::Time(w) => w.snapshot(now),
        }
    }

    fn clear(&self) {
        match &self.outcomes {
            Outcomes::None => {}
            Outcomes::Count(w) => w.reset(),
            Outcomes::Time(w) => w.reset(),
        }
        self.warm.store(false, Relaxed);
        self.consecutive.store(0, Relaxed);
    }

    /// Moves to `to` if the word still is `expected` (always, for `None`).
    /// Returns whether it did.
    pub(crate) fn transition(
        &self,
        expected: Option<u64>,
        to: State,
        cause: Cause,
        now: Instant,
    ) -> bool {
        let event = {
            let mut ctl = self.control.lock();
            let cur = self.word.load(Acquire);
            if expected.is_some_and(|e| e != cur) {
                return false;
            }
            let from = state_of(cur);
            if expected.is_none() && from == to && cause != Cause::Reset {
                return false;
            }
            if let Some(g) = &self.group {
                let holds = matches!(to, State::Open | State::HalfOpen);
                if holds && !ctl.holds_slot {
                    if !g.try_open() {
                        drop(ctl);
                        self.trip_refused(cause, g);
                        return false;
                    }
                    ctl.holds_slot = true;
                } else if !holds && ctl.holds_slot {
                    g.closed();
                    ctl.holds_slot = false;
                }
            }
            let generation = generation_of(cur) + 1;
            let window = self.window_snapshot(now);
            let mut open_for = None;
            match to {
                State::Open => {
                    let d = ctl.backoff.next_delay();
                    ctl.trips += 1;
                    self.open_until
                        .store(self.since_epoch(now).saturating_add(nanos(d)), Release);
                    open_for = Some(d);
                }
                State::HalfOpen => {
                    let until = match self.max_half_open {
                        Some(d) => self.since_epoch(now).saturating_add(nanos(d)),
                        None => u64::MAX,
                    };
                    self.half_open_until.store(until, Release);
                }
                State::Closed => {
                    if from != State::MetricsOnly || cause == Cause::Reset {
                        self.clear();
                    }
                    ctl.backoff.reset();
                    if cause == Cause::Reset {
                        ctl.trips = 0;
                        self.rejected.store(0, Relaxed);
                        self.late.store(0, Relaxed);
                        self.transitions.store(0, Relaxed);
                    }
                }
                State::ForcedOpen | State::Disabled | State::MetricsOnly => {}
            }
            self.gate.reset(generation);
            self.word.store(pack(to, generation), Release);
            if cause != Cause::Reset {
                self.transitions.fetch_add(1, Relaxed);
            }
            self.metrics.transition(from, to);
            // `None` fields are left out of the event.
            tracing::info!(
                target: TARGET, name = %self.name, key = self.key.as_deref().map(field::display),
                %from, %to, %cause, generation, open_for = open_for.map(field::debug),
                "circuit breaker state changed"
            );
            Transition {
                name: self.name.clone(),
                key: self.key.clone(),
                from,
                to,
                cause,
                generation,
                window,
                open_for,
            }
        };
        self.wake_all();
        if let Some(l) = &self.listener {
            l(&Event::Transition(event));
        }
        true
    }

    /// A trip its group had no room for: the breaker stays closed.
    #[cold]
    fn trip_refused(&self, cause: Cause, group: &BreakerGroup) {
        self.metrics.trips_refused.increment(1);
        let open = group.open();
        let members = group.members();
        tracing::debug!(
            target: TARGET, name = %self.name, key = self.key.as_deref().map(field::display), %cause,
            open, members,
            max_open_percent = group.max_open_percent(),
            "circuit breaker trip refused: its group is at its open cap"
        );
        if let Some(l) = &self.listener {
            l(&Event::TripRefused(TripRefused {
                name: self.name.clone(),
                key: self.key.clone(),
                cause,
                open,
                members,
            }));
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let word = self.word.load(Acquire);
        let state = state_of(word);
        let trips = self.control.lock().trips;
        let retry_after = match state {
            State::Open => Some(
                self.at(self.open_until.load(Acquire))
                    .saturating_duration_since(now),
            ),
            State::ForcedOpen => Some(Duration::MAX),
            _ => None,
        };
        let (probes_in_flight, probe_successes) = if state == State::HalfOpen {
            (self.gate.in_flight().into(), self.gate.successes().into())
        } else {
            (0, 0)
        };
        Snapshot {
            state,
            generation: generation_of(word),
            window: self.window_snapshot(now),
            consecutive_failures: self.consecutive.load(Relaxed),
            retry_after,
            probes_in_flight,
            probe_successes,
            trips,
            rejected: self.rejected.load(Relaxed),
            late_results: self.late.load(Relaxed),
            transitions: self.transitions.load(Relaxed),
        }
    }
}
